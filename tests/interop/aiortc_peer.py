#!/usr/bin/python3
"""aiortc 1.4 WebRTC peer driven by JSON lines (stdin: commands, stdout: events).

Commands: {"cmd":"answer","sdp":...}  -> {"event":"answer","sdp":...}
          {"cmd":"offer"}             -> {"event":"offer","sdp":...}; then {"cmd":"remote-answer","sdp":...}
          {"cmd":"stats"}             -> {"event":"stats","rtpReceived":n,"rtpSent":n,"dtls":..., "ice":...}
          {"cmd":"close"}
No STUN/TURN servers are configured (iceServers=[]); aiortc sends silence (PCMU/opus) on its audio track.
"""
import asyncio
import json
import sys

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender

counts = {"rtpReceived": 0, "rtpSent": 0}

_orig_handle = RTCRtpReceiver._handle_rtp_packet


async def _counting_handle(self, packet, arrival_time_ms):
    counts["rtpReceived"] += 1
    return await _orig_handle(self, packet, arrival_time_ms)


RTCRtpReceiver._handle_rtp_packet = _counting_handle


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main():
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    loop = asyncio.get_event_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    @pc.on("connectionstatechange")
    async def on_state():
        emit({"event": "state", "connection": pc.connectionState})

    def stats():
        dtls = None
        ice = None
        for t in pc.getTransceivers():
            if t.sender and t.sender.transport:
                dtls = t.sender.transport.state
                ice = t.sender.transport.transport.state
                try:
                    counts["rtpSent"] = t.sender._RTCRtpSender__packet_count
                except AttributeError:
                    pass
        return {"event": "stats", **counts, "dtls": dtls, "ice": ice, "connection": pc.connectionState}

    while True:
        line = await reader.readline()
        if not line:
            break
        msg = json.loads(line)
        cmd = msg.get("cmd")
        if cmd == "answer":
            await pc.setRemoteDescription(RTCSessionDescription(sdp=msg["sdp"], type="offer"))
            for t in pc.getTransceivers():
                if t.kind == "audio":
                    pc.addTrack(AudioStreamTrack())
                    break
            await pc.setLocalDescription(await pc.createAnswer())
            emit({"event": "answer", "sdp": pc.localDescription.sdp})
        elif cmd == "offer":
            pc.addTrack(AudioStreamTrack())
            await pc.setLocalDescription(await pc.createOffer())
            emit({"event": "offer", "sdp": pc.localDescription.sdp})
        elif cmd == "remote-answer":
            await pc.setRemoteDescription(RTCSessionDescription(sdp=msg["sdp"], type="answer"))
            emit({"event": "ok"})
        elif cmd == "stats":
            emit(stats())
        elif cmd == "close":
            break
    await pc.close()
    emit({"event": "closed"})


if __name__ == "__main__":
    asyncio.run(main())
