#!/usr/bin/python3
"""Independent Jingle audio-call client on Debian's python3-aiortc (1.4) + python3-slixmpp (1.8).

Run it with the system interpreter (NOT the pyenv python3 that may come first on PATH)::

    /usr/bin/python3 tests/interop/jingle_aiortc_peer.py --jid carol@localhost --password pw \
        --host 127.0.0.1 --port 5222 --ca /path/to/prosody/cert.crt [--answer auto|manual] [--bad-fingerprint]

It places and answers audio calls the way Conversations does (see shared docs/protocol.md §2-§3):
XEP-0353 propose to the bare JID, ringing + proceed to the caller's full JID, session-initiate from the
full JID that got the proceed, session-accept, transport-info trickle, session-terminate. Media: XEP-0167 RTP
(opus first, rtcp-mux, header extensions, SSMA sources), XEP-0176 ICE-UDP (ufrag/pwd/candidates), XEP-0320
plain DTLS fingerprints with setup, XEP-0338 BUNDLE group. No OMEMO: a `<device/>` in proceed is ignored and
fingerprints always go out in clear.

The Jingle <-> SDP mapping is this file's own (after Conversations' SessionDescription.java); aiortc only sees
SDP. aiortc 1.4 does not trickle: it gathers every candidate before it yields the local description, so
candidates go inside session-initiate / session-accept (legal; Dino does it too). Remote candidates from the
other side's initiate/accept are put into the SDP handed to aiortc, trickled ones are added with
addIceCandidate. Because aioice gives up at once when it has no remote candidate at all when the checks start,
a remote description that carries no candidate is applied only after the first trickled candidate arrived
(or after 3 s).

With ``--bad-fingerprint`` every fingerprint we signal is altered (first byte changed), so it no longer
matches the certificate aiortc presents in DTLS: the other side must refuse the call (security test).

Control protocol: one JSON object per line on stdin; events are JSON lines on stdout (flushed after each);
logs go to stderr. EOF on stdin == quit. Timestamps ``t`` and the ``phases`` values are wall-clock epoch
milliseconds (``time.time() * 1000``), the same origin as Deno's ``performance.timeOrigin + performance.now()``.

Commands
  {"cmd":"call","to":BAREJID}        JMI propose  -> {"event":"proposed","sid":..,"to":..,"t":..}
  {"cmd":"accept","sid":S}           answer a ringing incoming call (with --answer manual)
  {"cmd":"reject","sid":S}           JMI reject of a ringing incoming call
  {"cmd":"hangup"[,"sid":S]}         session-terminate <success/> (or retract / reject before the session)
  {"cmd":"stats"[,"sid":S]}          -> {"event":"stats","sid":..,"rtpReceived":n,"rtpSent":n,"ice":..,"dtls":..}
  {"cmd":"ping"}                     -> {"event":"pong"}
  {"cmd":"quit"}                     ends every call, disconnects, exits

Events
  {"event":"ready","jid":FULLJID}
  {"event":"incoming","sid":..,"from":FULLJID,"media":["audio"],"t":..}
  {"event":"phase","sid":..,"phase":"proposed|ringing|proceed|initiate|accept|iceConnected|dtlsConnected|
                                     firstRtpSent|firstRtpReceived|ended","t":..}
  {"event":"connected","sid":..,"ice":..,"dtls":..,"phases":{..}}
  {"event":"first_rtp","sid":..,"direction":"in|out","t":..}
  {"event":"ended","sid":..,"reason":..,"text":..,"by":"local|remote","phases":{..},"rtpReceived":n,
   "rtpSent":n,"connected":bool}
  {"event":"error","message":..}
"""

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import re
import socket
import ssl
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack
from aiortc.rtcdtlstransport import RTCDtlsTransport, certificate_digest
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.sdp import candidate_from_sdp
from slixmpp import ClientXMPP
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.handler import Callback, CoroutineCallback
from slixmpp.xmlstream.matcher import MatchXPath

NS_CLIENT = "jabber:client"
NS_JINGLE = "urn:xmpp:jingle:1"
NS_JINGLE_ERRORS = "urn:xmpp:jingle:errors:1"
NS_JMI = "urn:xmpp:jingle-message:0"
NS_RTP = "urn:xmpp:jingle:apps:rtp:1"
NS_RTCP_FB = "urn:xmpp:jingle:apps:rtp:rtcp-fb:0"
NS_HDREXT = "urn:xmpp:jingle:apps:rtp:rtp-hdrext:0"
NS_SSMA = "urn:xmpp:jingle:apps:rtp:ssma:0"
NS_GROUPING = "urn:xmpp:jingle:apps:grouping:0"
NS_ICE_UDP = "urn:xmpp:jingle:transports:ice-udp:1"
NS_DTLS = "urn:xmpp:jingle:apps:dtls:0"
NS_RECEIPTS = "urn:xmpp:receipts"
NS_HINTS = "urn:xmpp:hints"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"

IQ_TIMEOUT = 10
CONNECT_TIMEOUT = 20.0
RING_TIMEOUT = 30.0
CANDIDATE_WAIT = 3.0

log = logging.getLogger("jingle_aiortc_peer")
_stdout_lock = threading.Lock()


def now_ms() -> float:
    return time.time() * 1000.0


def emit(event: str, **fields: Any) -> None:
    line = json.dumps({"event": event, **fields})
    with _stdout_lock:
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            pass  # the controller went away; we exit on stdin EOF anyway


# --------------------------------------------------------------------------------------------------
# RTP counting: aiortc has no per-packet hooks, so wrap the two places every RTP packet passes.
# Receivers and DTLS transports get a `_jingle_call` attribute pointing at their call.
# --------------------------------------------------------------------------------------------------

_orig_handle_rtp = RTCRtpReceiver._handle_rtp_packet
_orig_send_rtp = RTCDtlsTransport._send_rtp


async def _counting_handle_rtp(self: Any, packet: Any, arrival_time_ms: int) -> None:
    call = getattr(self, "_jingle_call", None)
    if call is not None:
        call.on_rtp_received()
    return await _orig_handle_rtp(self, packet, arrival_time_ms)


async def _counting_send_rtp(self: Any, data: bytes) -> None:
    await _orig_send_rtp(self, data)
    call = getattr(self, "_jingle_call", None)
    # RTCP shares this path (payload type byte 192..223 per RFC 5761); count RTP only.
    if call is not None and len(data) > 1 and not 192 <= data[1] <= 223:
        call.on_rtp_sent()


RTCRtpReceiver._handle_rtp_packet = _counting_handle_rtp
RTCDtlsTransport._send_rtp = _counting_send_rtp


# --------------------------------------------------------------------------------------------------
# Jingle <-> SDP (own mapping, after Conversations' SessionDescription / RtpContentMap).
# --------------------------------------------------------------------------------------------------

class JingleError(Exception):
    """A Jingle content map we cannot use; `condition` is the session-terminate reason to send."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text


def q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def _senders_to_direction(senders: Optional[str], we_are_initiator: bool, local: bool) -> str:
    """Jingle `senders` (relative to the roles) -> SDP direction of the description owner (local or remote)."""
    if senders in (None, "both"):
        return "sendrecv"
    if senders == "none":
        return "inactive"
    owner_is_initiator = we_are_initiator if local else not we_are_initiator
    owner_sends = (senders == "initiator") == owner_is_initiator
    return "sendonly" if owner_sends else "recvonly"


def _direction_to_senders(direction: str, owner_is_initiator: bool) -> Optional[str]:
    if direction == "sendrecv":
        return None
    if direction == "inactive":
        return "none"
    owner_sends = direction == "sendonly"
    return "initiator" if owner_sends == owner_is_initiator else "responder"


def jingle_candidate_to_sdp(c: ET.Element) -> str:
    """XEP-0176 <candidate/> -> SDP candidate attribute value (without the "candidate:" prefix handling)."""
    for required in ("foundation", "component", "protocol", "priority", "ip", "port", "type"):
        if not c.get(required):
            raise JingleError("failed-transport", f"candidate without {required}")
    if c.get("protocol", "").lower() != "udp":
        raise JingleError("failed-transport", f"non-UDP candidate {c.get('protocol')}")
    parts = [c.get("foundation"), c.get("component"), "udp", c.get("priority"), c.get("ip"), c.get("port"),
             "typ", c.get("type")]
    if c.get("rel-addr") and c.get("rel-port"):
        parts += ["raddr", c.get("rel-addr"), "rport", c.get("rel-port")]
    parts += ["generation", c.get("generation") or "0"]
    for p in parts:
        if p is None or re.search(r"\s", p):
            raise JingleError("failed-transport", "bad candidate attribute")
    return " ".join(str(p) for p in parts)


def sdp_candidate_to_jingle(value: str) -> Optional[ET.Element]:
    """SDP `candidate:` attribute value -> XEP-0176 <candidate/>; None for non-UDP candidates."""
    f = value.split()
    if len(f) < 8 or f[6] != "typ":
        raise ValueError(f"bad SDP candidate {value!r}")
    if f[2].lower() != "udp":
        return None
    attrs = {"foundation": f[0], "component": f[1], "protocol": "udp", "priority": f[3], "ip": f[4],
             "port": f[5], "type": f[7], "generation": "0", "id": uuid.uuid4().hex[:10], "network": "0"}
    i = 8
    while i + 1 < len(f):
        if f[i] == "raddr":
            attrs["rel-addr"] = f[i + 1]
        elif f[i] == "rport":
            attrs["rel-port"] = f[i + 1]
        elif f[i] == "generation":
            attrs["generation"] = f[i + 1]
        i += 2
    return ET.Element(q(NS_ICE_UDP, "candidate"), attrs)


def sdp_to_jingle_contents(sdp: str, we_are_initiator: bool, alter_fingerprint: bool
                           ) -> Tuple[List[ET.Element], Optional[ET.Element]]:
    """aiortc's local SDP -> Jingle <content/> elements (creator=initiator) and the BUNDLE <group/>."""
    session_fp: Optional[Tuple[str, str]] = None
    session_setup: Optional[str] = None
    group: Optional[ET.Element] = None
    sections: List[Dict[str, Any]] = []
    cur: Optional[Dict[str, Any]] = None
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            media, _port, _proto, *pts = line[2:].split()
            cur = {"media": media, "pts": pts, "attrs": []}
            sections.append(cur)
            continue
        if not line.startswith("a="):
            continue
        key, _, value = line[2:].partition(":")
        if cur is None:
            if key == "group":
                semantics, *names = value.split()
                group = ET.Element(q(NS_GROUPING, "group"), {"semantics": semantics})
                for n in names:
                    ET.SubElement(group, q(NS_GROUPING, "content"), {"name": n})
            elif key == "fingerprint":
                h, fp = value.split(None, 1)
                session_fp = session_fp or (h, fp)
            elif key == "setup":
                session_setup = value
        else:
            cur["attrs"].append((key, value))

    contents: List[ET.Element] = []
    for s in sections:
        attrs: List[Tuple[str, str]] = s["attrs"]
        get = lambda k: next((v for kk, v in attrs if kk == k), None)  # noqa: E731
        mid = get("mid")
        if mid is None:
            raise ValueError("m= section without a=mid")
        direction = next((k for k, _ in attrs if k in ("sendrecv", "sendonly", "recvonly", "inactive")),
                         "sendrecv")
        content = ET.Element(q(NS_JINGLE, "content"), {"creator": "initiator", "name": mid})
        senders = _direction_to_senders(direction, we_are_initiator)
        if senders:
            content.set("senders", senders)
        desc = ET.SubElement(content, q(NS_RTP, "description"), {"media": s["media"]})
        rtpmap = {v.split()[0]: v.split()[1] for k, v in attrs if k == "rtpmap"}
        fmtp = {v.split(None, 1)[0]: (v.split(None, 1) + [""])[1] for k, v in attrs if k == "fmtp"}
        fbs: Dict[str, List[str]] = {}
        for k, v in attrs:
            if k == "rtcp-fb":
                pt, fb = v.split(None, 1)
                fbs.setdefault(pt, []).append(fb)
        for pt in s["pts"]:
            if pt not in rtpmap:
                continue
            name, clock, *ch = rtpmap[pt].split("/")
            pattrs = {"id": pt, "name": name, "clockrate": clock}
            if ch and ch[0] != "1":
                pattrs["channels"] = ch[0]
            p = ET.SubElement(desc, q(NS_RTP, "payload-type"), pattrs)
            for kv in filter(None, fmtp.get(pt, "").split(";")):
                if "=" in kv:  # Conversations drops tokens without '=' too
                    pk, pv = kv.split("=", 1)
                    ET.SubElement(p, q(NS_RTP, "parameter"), {"name": pk.strip(), "value": pv.strip()})
            for fb in fbs.get(pt, []):
                t, *sub = fb.split()
                fattrs = {"type": t}
                if sub:
                    fattrs["subtype"] = sub[0]
                ET.SubElement(p, q(NS_RTCP_FB, "rtcp-fb"), fattrs)
        for k, v in attrs:
            if k == "extmap":
                eid, uri = v.split()[:2]
                ET.SubElement(desc, q(NS_HDREXT, "rtp-hdrext"), {"id": eid.split("/")[0], "uri": uri})
        sources: Dict[str, ET.Element] = {}
        for k, v in attrs:
            if k == "ssrc":
                ssrc, _, rest = v.partition(" ")
                pname, _, pvalue = rest.partition(":")
                src = sources.get(ssrc)
                if src is None:
                    src = sources[ssrc] = ET.SubElement(desc, q(NS_SSMA, "source"), {"ssrc": ssrc})
                ET.SubElement(src, q(NS_SSMA, "parameter"), {"name": pname, "value": pvalue})
        if get("rtcp-mux") is not None:
            ET.SubElement(desc, q(NS_RTP, "rtcp-mux"))

        ufrag, pwd = get("ice-ufrag"), get("ice-pwd")
        if not ufrag or not pwd:
            raise ValueError("m= section without ice-ufrag/ice-pwd")
        transport = ET.SubElement(content, q(NS_ICE_UDP, "transport"), {"ufrag": ufrag, "pwd": pwd})
        fps = [v.split(None, 1) for k, v in attrs if k == "fingerprint"]
        fp = next(((h, f) for h, f in fps if h.lower() == "sha-256"), fps[0] if fps else session_fp)
        setup = get("setup") or session_setup
        if not fp or not setup:
            raise ValueError("m= section without fingerprint/setup")
        value = fp[1].upper()
        if alter_fingerprint:
            value = ("00" if not value.startswith("00") else "11") + value[2:]
        fpel = ET.SubElement(transport, q(NS_DTLS, "fingerprint"), {"hash": fp[0].lower(), "setup": setup})
        fpel.text = value
        for k, v in attrs:
            if k == "candidate":
                c = sdp_candidate_to_jingle(v)
                if c is not None:
                    transport.append(c)
        contents.append(content)
    return contents, group


def jingle_to_sdp(jingle: ET.Element, we_are_initiator: bool, remote_candidates: Dict[str, List[str]]) -> str:
    """The other side's session-initiate/accept -> SDP for aiortc (candidates from `remote_candidates`)."""
    contents = jingle.findall(q(NS_JINGLE, "content"))
    if not contents:
        raise JingleError("failed-application", "no content")
    lines = ["v=0", f"o=- {int(time.time())} 2 IN IP4 127.0.0.1", "s=-", "t=0 0"]
    group = jingle.find(q(NS_GROUPING, "group"))
    if group is not None:
        names = [c.get("name", "") for c in group.findall(q(NS_GROUPING, "content"))]
        lines.append(f"a=group:{group.get('semantics', 'BUNDLE')} {' '.join(names)}")
    lines.append("a=msid-semantic:WMS *")
    for content in contents:
        name = content.get("name")
        desc = content.find(q(NS_RTP, "description"))
        transport = content.find(q(NS_ICE_UDP, "transport"))
        if not name or desc is None:
            raise JingleError("unsupported-applications", "content without an RTP description")
        if transport is None:
            raise JingleError("unsupported-transports", "content without an ICE-UDP transport")
        media = desc.get("media")
        if media not in ("audio", "video"):
            raise JingleError("unsupported-applications", f"media {media!r}")
        pts = desc.findall(q(NS_RTP, "payload-type"))
        if not pts:
            raise JingleError("failed-application", "description without payload types")
        for p in pts:
            if not (p.get("id") or "").isdigit() or not p.get("name") or not (p.get("clockrate") or "").isdigit():
                raise JingleError("failed-application", "bad payload-type")
        ufrag, pwd = transport.get("ufrag"), transport.get("pwd")
        fp = transport.find(q(NS_DTLS, "fingerprint"))
        if not ufrag or not pwd:
            raise JingleError("failed-transport", "transport without ufrag/pwd")
        if fp is None or not (fp.text or "").strip() or not fp.get("setup") or not fp.get("hash"):
            raise JingleError("security-error", "no XEP-0320 fingerprint with setup")
        for v in (ufrag, pwd, fp.text.strip(), fp.get("setup"), fp.get("hash")):
            if re.search(r"\s", v or ""):
                raise JingleError("failed-transport", "whitespace in transport attributes")
        lines.append(f"m={media} 9 UDP/TLS/RTP/SAVPF {' '.join(p.get('id') for p in pts)}")
        lines.append("c=IN IP4 0.0.0.0")
        lines.append("a=rtcp:9 IN IP4 0.0.0.0")
        lines.append(f"a=ice-ufrag:{ufrag}")
        lines.append(f"a=ice-pwd:{pwd}")
        lines.append(f"a=fingerprint:{fp.get('hash')} {fp.text.strip().upper()}")
        lines.append(f"a=setup:{fp.get('setup')}")
        lines.append(f"a=mid:{name}")
        lines.append("a=" + _senders_to_direction(content.get("senders"), we_are_initiator, local=False))
        if desc.find(q(NS_RTP, "rtcp-mux")) is not None or group is not None:
            lines.append("a=rtcp-mux")
        for ext in desc.findall(q(NS_HDREXT, "rtp-hdrext")):
            if ext.get("id") and ext.get("uri"):
                lines.append(f"a=extmap:{ext.get('id')} {ext.get('uri')}")
        for p in pts:
            rtpmap = f"a=rtpmap:{p.get('id')} {p.get('name')}/{p.get('clockrate')}"
            channels = p.get("channels")
            if channels and channels != "1":
                rtpmap += f"/{channels}"
            lines.append(rtpmap)
            params = [f"{x.get('name')}={x.get('value')}" for x in p.findall(q(NS_RTP, "parameter"))
                      if x.get("name")]
            if params:
                lines.append(f"a=fmtp:{p.get('id')} {';'.join(params)}")
            for fb in p.findall(q(NS_RTCP_FB, "rtcp-fb")):
                sub = f" {fb.get('subtype')}" if fb.get("subtype") else ""
                lines.append(f"a=rtcp-fb:{p.get('id')} {fb.get('type')}{sub}")
        for src in desc.findall(q(NS_SSMA, "source")):
            for param in src.findall(q(NS_SSMA, "parameter")):
                if param.get("name") and param.get("name") != "msid":
                    lines.append(f"a=ssrc:{src.get('ssrc')} {param.get('name')}:{param.get('value', '')}")
        for cand in remote_candidates.get(name, []):
            lines.append(f"a=candidate:{cand}")
    return "\r\n".join(lines) + "\r\n"


# --------------------------------------------------------------------------------------------------
# One call.
# --------------------------------------------------------------------------------------------------

class Call:
    """State of one call: roles, the RTCPeerConnection, phase timestamps and RTP counters."""

    def __init__(self, peer: "Peer", sid: str, direction: str, other: str) -> None:
        self.peer = peer
        self.sid = sid
        self.direction = direction  # outgoing | incoming
        self.other = other  # bare JID until proceed/propose names the full JID
        self.initiator = direction == "outgoing"
        self.state = "proposed"  # proposed -> proceeding -> pending -> active -> ended
        self.phases: Dict[str, float] = {}
        self.pc: Optional[RTCPeerConnection] = None
        self.rtp_received = 0
        self.rtp_sent = 0
        self.remote_candidates: Dict[str, List[str]] = {}  # content name -> SDP candidate values
        self.remote_ufrag: Dict[str, str] = {}
        self.remote_fingerprints: List[str] = []  # sha-256 values the other side signalled
        self.remote_applied = False
        self.candidate_arrived = asyncio.Event()
        self.ended_event = asyncio.Event()
        self.connected = False
        self.tasks: List[asyncio.Task] = []

    def mark(self, phase: str) -> None:
        if phase not in self.phases:
            self.phases[phase] = now_ms()
            emit("phase", sid=self.sid, phase=phase, t=self.phases[phase])

    def on_rtp_received(self) -> None:
        self.rtp_received += 1
        if "firstRtpReceived" not in self.phases:
            self.mark("firstRtpReceived")
            emit("first_rtp", sid=self.sid, direction="in", t=self.phases["firstRtpReceived"])

    def on_rtp_sent(self) -> None:
        self.rtp_sent += 1
        if "firstRtpSent" not in self.phases:
            self.mark("firstRtpSent")
            emit("first_rtp", sid=self.sid, direction="out", t=self.phases["firstRtpSent"])

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.append(task)

        def done(t: asyncio.Task) -> None:
            if not t.cancelled() and t.exception() is not None:
                log.warning("call %s task failed: %r", self.sid, t.exception())
        task.add_done_callback(done)

    def states(self) -> Dict[str, Optional[str]]:
        ice = dtls = None
        if self.pc is not None:
            for t in self.pc.getTransceivers():
                if t.sender and t.sender.transport:
                    dtls = t.sender.transport.state
                    ice = t.sender.transport.transport.state
                    break
        return {"ice": ice, "dtls": dtls, "connection": self.pc.connectionState if self.pc else None}

    # ---- media plane ----
    def new_pc(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # host candidates only, no STUN server
        self.pc = pc

        @pc.on("iceconnectionstatechange")
        def on_ice() -> None:
            if pc.iceConnectionState in ("connected", "completed"):
                self.mark("iceConnected")

        @pc.on("connectionstatechange")
        async def on_conn() -> None:
            st = pc.connectionState
            if st == "connected" and not self.connected:
                self.connected = True
                self.mark("iceConnected")
                self.mark("dtlsConnected")
                self.state = "active"
                emit("connected", sid=self.sid, phases=self.phases, **self.states())
            elif st == "failed" and self.state != "ended":
                if self.certificate_mismatch():
                    await self.peer.terminate(self, "security-error",
                                              "DTLS certificate does not match the signalled fingerprint")
                else:
                    await self.peer.terminate(self, "connectivity-error", "ICE or DTLS failed")

        return pc

    def certificate_mismatch(self) -> bool:
        """After a failure: did DTLS complete with a certificate other than the signalled fingerprint?"""
        for t in self.pc.getTransceivers() if self.pc else []:
            dtls = t.sender.transport
            ssl_conn = getattr(dtls, "ssl", None) if dtls is not None else None
            cert = ssl_conn.get_peer_certificate() if ssl_conn is not None else None
            if cert is not None:
                digest = certificate_digest(cert).upper()
                return all(digest != f.upper() for f in self.remote_fingerprints)
        return False

    def tag_transports(self) -> None:
        """Lets the RTP counting wrappers find this call."""
        assert self.pc is not None
        for t in self.pc.getTransceivers():
            t.receiver._jingle_call = self
            if t.sender.transport is not None:
                t.sender.transport._jingle_call = self

    async def wait_for_candidates(self) -> None:
        """aioice fails at once with an empty check list: wait for a trickled candidate if none came inline."""
        if not any(self.remote_candidates.values()):
            try:
                await asyncio.wait_for(self.candidate_arrived.wait(), CANDIDATE_WAIT)
            except asyncio.TimeoutError:
                log.info("call %s: no remote candidate after %.0f s", self.sid, CANDIDATE_WAIT)

    def record_fingerprints(self, jingle: ET.Element) -> None:
        self.remote_fingerprints = [(f.text or "").strip() for f in jingle.iter(q(NS_DTLS, "fingerprint"))
                                    if (f.get("hash") or "").lower() == "sha-256"]

    def collect_candidates(self, jingle: ET.Element) -> List[Tuple[str, str]]:
        """Remote candidates of a Jingle element (initiate/accept/transport-info): [(content name, SDP value)]."""
        out: List[Tuple[str, str]] = []
        for content in jingle.findall(q(NS_JINGLE, "content")):
            name = content.get("name", "")
            transport = content.find(q(NS_ICE_UDP, "transport"))
            if transport is None:
                continue
            ufrag = transport.get("ufrag")
            if ufrag and name in self.remote_ufrag and ufrag != self.remote_ufrag[name]:
                continue  # other ICE generation: Conversations drops these too
            if ufrag and name not in self.remote_ufrag:
                self.remote_ufrag[name] = ufrag
            for c in transport.findall(q(NS_ICE_UDP, "candidate")):
                try:
                    out.append((name, jingle_candidate_to_sdp(c)))
                except JingleError as e:
                    log.info("call %s: candidate dropped: %s", self.sid, e)
        return out

    async def add_candidates(self, found: List[Tuple[str, str]]) -> None:
        for name, value in found:
            self.remote_candidates.setdefault(name, []).append(value)
            if self.remote_applied and self.pc is not None:
                cand = candidate_from_sdp(value)
                cand.sdpMid = name
                try:
                    await self.pc.addIceCandidate(cand)
                except Exception as e:  # noqa: BLE001
                    log.info("call %s: addIceCandidate refused: %r", self.sid, e)
        if found:
            self.candidate_arrived.set()

    async def close_media(self) -> None:
        if self.pc is not None:
            try:
                await self.pc.close()
            except Exception:  # noqa: BLE001
                pass


# --------------------------------------------------------------------------------------------------
# The XMPP client.
# --------------------------------------------------------------------------------------------------

class Peer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.xmpp = ClientXMPP(args.jid, args.password)
        self.xmpp.register_plugin("xep_0030")
        self.calls: Dict[str, Call] = {}
        self.last_sid: Optional[str] = None
        self.session_started = asyncio.Event()
        self.failed: Optional[str] = None
        self.queue: "asyncio.Queue[Optional[str]]" = asyncio.Queue()

        if args.ca:
            self.xmpp.ca_certs = Path(args.ca)
        else:
            if not _is_loopback(args.host):
                raise SystemExit("refusing to disable TLS verification for a non-loopback host; pass --ca")
            self.xmpp.ssl_context.check_hostname = False
            self.xmpp.ssl_context.verify_mode = ssl.CERT_NONE

        self.xmpp.add_event_handler("session_start", self._on_session_start)
        self.xmpp.add_event_handler("failed_auth", self._on_failed_auth)
        self.xmpp.add_event_handler("connection_failed", self._on_connection_failed)
        self.xmpp.register_handler(CoroutineCallback(
            "Jingle", MatchXPath(f"{{{NS_CLIENT}}}iq/{{{NS_JINGLE}}}jingle"), self._on_jingle_iq))
        # Every message: JMI elements carry no <body>, so slixmpp's "message" event would not fire.
        self.xmpp.register_handler(Callback(
            "JMI", MatchXPath(f"{{{NS_CLIENT}}}message"), self._on_message))

    async def _on_session_start(self, _event: Any) -> None:
        # Caps-less presence with priority so the server routes bare-JID chat messages here too.
        self.xmpp.send_presence(ppriority=1)
        disco = self.xmpp.plugin["xep_0030"]
        for feature in (NS_JINGLE, NS_JMI, NS_RTP, "urn:xmpp:jingle:apps:rtp:audio", NS_ICE_UDP, NS_DTLS,
                        NS_GROUPING):
            disco.add_feature(feature)
        # "ready" means reachable: the server handles our stanzas in order, so once it answered this query it
        # has made us available (a propose to our bare JID sent before that bounces: no offline storage).
        try:
            await disco.get_info(jid=self.xmpp.boundjid.domain, timeout=10)
        except Exception:  # noqa: BLE001
            log.warning("server disco#info after presence failed; reporting ready anyway")
        self.session_started.set()

    def _on_failed_auth(self, _event: Any) -> None:
        self.failed = "authentication failed"
        self.session_started.set()

    def _on_connection_failed(self, event: Any) -> None:
        self.failed = f"connection failed: {event}"
        self.session_started.set()

    @property
    def own_full(self) -> str:
        return str(self.xmpp.boundjid.full)

    @property
    def own_bare(self) -> str:
        return str(self.xmpp.boundjid.bare)

    # ---- sending ----
    def send_jmi(self, to: str, name: str, sid: str, children: Tuple[ET.Element, ...] = (),
                 msg_id: Optional[str] = None, receipt: bool = False) -> None:
        msg = self.xmpp.make_message(mto=to, mtype="chat")
        msg["id"] = msg_id or uuid.uuid4().hex
        el = ET.SubElement(msg.xml, q(NS_JMI, name), {"id": sid})
        for c in children:
            el.append(c)
        if receipt:
            ET.SubElement(msg.xml, q(NS_RECEIPTS, "request"))
        ET.SubElement(msg.xml, q(NS_HINTS, "store"))
        msg.send()

    async def send_jingle(self, call: Call, action: str, contents: List[ET.Element] = (),
                          group: Optional[ET.Element] = None, reason: Optional[Tuple[str, str]] = None) -> None:
        iq = self.xmpp.make_iq_set(ito=call.other)
        jingle = ET.SubElement(iq.xml, q(NS_JINGLE, "jingle"), {"action": action, "sid": call.sid})
        if action == "session-initiate":
            jingle.set("initiator", self.own_full)
        elif action == "session-accept":
            jingle.set("responder", self.own_full)
        for c in contents:
            jingle.append(c)
        if group is not None:
            jingle.append(group)
        if reason is not None:
            r = ET.SubElement(jingle, q(NS_JINGLE, "reason"))
            ET.SubElement(r, q(NS_JINGLE, reason[0]))
            if reason[1]:
                ET.SubElement(r, q(NS_JINGLE, "text")).text = reason[1]
        await iq.send(timeout=IQ_TIMEOUT)

    # ---- call life cycle ----
    def end(self, call: Call, reason: str, text: str, by: str) -> None:
        """Marks the call ended (once) and tears the media plane down."""
        if call.state == "ended":
            return
        call.state = "ended"
        call.mark("ended")
        emit("ended", sid=call.sid, reason=reason, text=text, by=by, phases=call.phases,
             rtpReceived=call.rtp_received, rtpSent=call.rtp_sent, connected=call.connected)
        call.ended_event.set()
        self.calls.pop(call.sid, None)
        asyncio.ensure_future(call.close_media())
        for t in call.tasks:
            if not t.done() and t is not asyncio.current_task():
                t.cancel()

    async def terminate(self, call: Call, reason: str, text: str = "") -> None:
        """Ends the call from our side with the message fitting its state."""
        if call.state == "ended":
            return
        state = call.state
        self.end(call, reason, text, "local")
        try:
            if state == "proposed" and call.direction == "outgoing":
                self.send_jmi(call.other.split("/")[0], "retract", call.sid)
            elif state == "proposed":
                self.send_jmi(call.other, "reject", call.sid)
            elif state == "proceeding" and call.direction == "outgoing" and "initiate" not in call.phases:
                self.send_jmi(call.other, "retract", call.sid)
            else:
                await self.send_jingle(call, "session-terminate", reason=(reason, text))
        except (IqError, IqTimeout) as e:
            log.info("call %s: terminate not acknowledged: %r", call.sid, e)

    async def fail(self, call: Call, e: BaseException) -> None:
        if isinstance(e, JingleError):
            await self.terminate(call, e.condition, e.text)
        elif isinstance(e, (IqError, IqTimeout)):
            self.end(call, "connectivity-error", f"IQ failed: {type(e).__name__}", "local")
        elif isinstance(e, asyncio.CancelledError):
            raise e
        else:
            log.exception("call %s failed", call.sid)
            await self.terminate(call, "failed-application", f"{type(e).__name__}: {e}")

    async def connect_watchdog(self, call: Call) -> None:
        await asyncio.sleep(CONNECT_TIMEOUT)
        if call.state != "ended" and not call.connected:
            await self.terminate(call, "connectivity-error", "no media connection in time")

    async def ring_watchdog(self, call: Call) -> None:
        await asyncio.sleep(RING_TIMEOUT)
        if call.state == "proposed":
            await self.terminate(call, "timeout", "no answer")

    # caller side
    def place_call(self, to: str) -> Call:
        bare = to.split("/")[0]
        sid = str(uuid.uuid4())
        call = Call(self, sid, "outgoing", bare)
        self.calls[sid] = call
        self.last_sid = sid
        desc = ET.Element(q(NS_RTP, "description"), {"media": "audio"})
        call.mark("proposed")
        self.send_jmi(bare, "propose", sid, (desc,), msg_id=f"jm-propose-{sid}", receipt=True)
        emit("proposed", sid=sid, to=bare, t=call.phases["proposed"])
        call.spawn(self.ring_watchdog(call))
        return call

    async def on_proceed(self, call: Call, frm: str) -> None:
        call.other = frm  # the session goes to the full JID that answered
        call.state = "proceeding"
        call.mark("proceed")
        try:
            pc = call.new_pc()
            pc.addTrack(AudioStreamTrack())
            await pc.setLocalDescription(await pc.createOffer())  # gathers every candidate first
            call.tag_transports()
            if call.state == "ended":
                return
            contents, group = sdp_to_jingle_contents(pc.localDescription.sdp, True, self.args.bad_fingerprint)
            call.mark("initiate")
            call.state = "pending"
            call.spawn(self.connect_watchdog(call))
            await self.send_jingle(call, "session-initiate", contents, group)
        except BaseException as e:  # noqa: BLE001
            await self.fail(call, e)

    async def on_session_accept(self, call: Call, jingle: ET.Element) -> None:
        call.mark("accept")
        try:
            await call.add_candidates(call.collect_candidates(jingle))
            await self.check_media(call, jingle)
            await call.wait_for_candidates()
            sdp = jingle_to_sdp(jingle, True, call.remote_candidates)
            call.record_fingerprints(jingle)
            if call.state == "ended":
                return
            assert call.pc is not None
            await call.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
            call.remote_applied = True
            call.tag_transports()
        except BaseException as e:  # noqa: BLE001
            await self.fail(call, e)

    # callee side
    def on_propose(self, frm: str, sid: str, media: List[str], wants_receipt: bool, msg_id: str) -> None:
        if sid in self.calls:
            return  # a resent propose
        call = Call(self, sid, "incoming", frm)
        self.calls[sid] = call
        self.last_sid = sid
        call.mark("proposed")
        if wants_receipt and msg_id:
            msg = self.xmpp.make_message(mto=frm, mtype="chat")
            ET.SubElement(msg.xml, q(NS_RECEIPTS, "received"), {"id": msg_id})
            msg.send()
        self.send_jmi(frm, "ringing", sid)
        call.mark("ringing")
        emit("incoming", sid=sid, **{"from": frm}, media=media, t=call.phases["proposed"])
        if media != ["audio"]:
            asyncio.ensure_future(self.terminate(call, "unsupported-applications", "audio only"))
            return
        if self.args.answer == "auto":
            self.accept(call)
        else:
            call.spawn(self.ring_watchdog(call))

    def accept(self, call: Call) -> None:
        if call.state != "proposed" or call.direction != "incoming":
            raise ValueError(f"call {call.sid} is not ringing")
        # Conversations: <accept/> to our own bare JID (other devices stop ringing), then <proceed/>.
        self.send_jmi(self.own_bare, "accept", call.sid)
        self.send_jmi(call.other, "proceed", call.sid, msg_id=f"jm-proceed-{call.sid}")
        call.state = "proceeding"
        call.mark("proceed")
        call.spawn(self.connect_watchdog(call))

    async def on_session_initiate(self, call: Call, jingle: ET.Element) -> None:
        call.mark("initiate")
        call.state = "pending"
        try:
            await call.add_candidates(call.collect_candidates(jingle))
            await self.check_media(call, jingle)
            await call.wait_for_candidates()
            sdp = jingle_to_sdp(jingle, False, call.remote_candidates)
            call.record_fingerprints(jingle)
            setup = next((f.get("setup") for f in jingle.iter(q(NS_DTLS, "fingerprint"))), None)
            if setup != "actpass":
                raise JingleError("security-error", f"initiator must offer setup=actpass, not {setup}")
            if call.state == "ended":
                return
            pc = call.new_pc()
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            call.remote_applied = True
            for t in pc.getTransceivers():
                if t.kind == "audio":
                    pc.addTrack(AudioStreamTrack())
                    break
            await pc.setLocalDescription(await pc.createAnswer())
            call.tag_transports()
            if call.state == "ended":
                return
            contents, group = sdp_to_jingle_contents(pc.localDescription.sdp, False, self.args.bad_fingerprint)
            call.mark("accept")
            await self.send_jingle(call, "session-accept", contents, group)
        except BaseException as e:  # noqa: BLE001
            await self.fail(call, e)

    async def check_media(self, call: Call, jingle: ET.Element) -> None:
        media = sorted(d.get("media", "") for d in jingle.iter(q(NS_RTP, "description")))
        if media != ["audio"]:
            raise JingleError("security-error", f"media {media} differ from the proposed audio")

    # ---- incoming stanzas ----
    def _on_message(self, msg: Any) -> None:
        if msg["type"] in ("error", "groupchat"):
            if msg["type"] == "error":
                mid = msg["id"] or ""
                for prefix in ("jm-propose-", "jm-proceed-"):
                    if mid.startswith(prefix) and mid[len(prefix):] in self.calls:
                        self.end(self.calls[mid[len(prefix):]], "connectivity-error", "JMI message bounced",
                                 "remote")
            return
        frm = str(msg["from"])
        for el in msg.xml:
            if not el.tag.startswith(f"{{{NS_JMI}}}"):
                continue
            name = el.tag.split("}")[1]
            sid = el.get("id")
            if not sid:
                continue
            try:
                self.on_jmi(name, sid, frm, el, msg)
            except Exception:  # noqa: BLE001
                log.exception("JMI %s from %s failed", name, frm)

    def on_jmi(self, name: str, sid: str, frm: str, el: ET.Element, msg: Any) -> None:
        call = self.calls.get(sid)
        from_self = frm.split("/")[0] == self.own_bare
        if name == "propose":
            if from_self or "/" not in frm:
                return
            media = [d.get("media", "") for d in el.findall(q(NS_RTP, "description"))]
            wants = msg.xml.find(q(NS_RECEIPTS, "request")) is not None
            self.on_propose(frm, sid, media, wants, msg["id"] or "")
            return
        if call is None or from_self:
            return  # our own accept echoed back, carbons, late messages
        if call.direction == "outgoing":
            if frm.split("/")[0] != call.other.split("/")[0]:
                return
            if name == "ringing" and call.state == "proposed":
                call.mark("ringing")
            elif name == "proceed" and call.state == "proposed" and "/" in frm:
                call.spawn(self.on_proceed(call, frm))
            elif name == "reject" and call.state in ("proposed", "proceeding"):
                self.end(call, "decline", "", "remote")
        else:
            if frm != call.other:
                return
            if name == "retract" and call.state in ("proposed", "proceeding"):
                self.end(call, "cancel", "retracted", "remote")

    async def _on_jingle_iq(self, iq: Any) -> None:
        if iq["type"] != "set":
            return
        jingle = iq.xml.find(q(NS_JINGLE, "jingle"))
        action = jingle.get("action") if jingle is not None else None
        sid = jingle.get("sid") if jingle is not None else None
        frm = str(iq["from"])
        call = self.calls.get(sid or "")
        if not action or not sid:
            self.iq_error(iq, "modify", "bad-request")
            return
        if call is None or frm != call.other:
            self.iq_error(iq, "cancel", "item-not-found", "unknown-session")
            return
        if action == "session-initiate":
            if call.direction != "incoming" or call.state != "proceeding":
                self.iq_error(iq, "wait", "unexpected-request", "out-of-order")
                return
            iq.reply().send()
            call.spawn(self.on_session_initiate(call, jingle))
        elif action == "session-accept":
            if call.direction != "outgoing" or call.state != "pending" or "accept" in call.phases:
                self.iq_error(iq, "wait", "unexpected-request", "out-of-order")
                return
            iq.reply().send()
            call.spawn(self.on_session_accept(call, jingle))
        elif action == "transport-info":
            iq.reply().send()
            await call.add_candidates(call.collect_candidates(jingle))
        elif action == "session-terminate":
            iq.reply().send()
            reason_el = jingle.find(q(NS_JINGLE, "reason"))
            reason, text = "unknown", ""
            if reason_el is not None:
                for r in reason_el:
                    local = r.tag.split("}")[1]
                    if local == "text":
                        text = r.text or ""
                    elif r.tag.startswith(f"{{{NS_JINGLE}}}"):
                        reason = local
            self.end(call, reason, text, "remote")
        elif action == "session-info":
            iq.reply().send()  # ringing/active/mute: nothing to do (as Conversations)
        else:
            self.iq_error(iq, "cancel", "feature-not-implemented", "unsupported-info")

    def iq_error(self, iq: Any, etype: str, condition: str, jingle_condition: Optional[str] = None) -> None:
        reply = iq.reply(clear=True)
        reply["type"] = "error"
        err = ET.SubElement(reply.xml, "{jabber:client}error", {"type": etype})
        ET.SubElement(err, q(NS_STANZAS, condition))
        if jingle_condition:
            ET.SubElement(err, q(NS_JINGLE_ERRORS, jingle_condition))
        reply.send()

    # ---- control ----
    def pick(self, cmd: Dict[str, Any]) -> Call:
        sid = cmd.get("sid") or self.last_sid
        call = self.calls.get(sid or "")
        if call is None:
            raise ValueError(f"no live call {sid!r}")
        return call

    async def command(self, cmd: Dict[str, Any]) -> None:
        name = cmd.get("cmd")
        if name == "call":
            self.place_call(str(cmd["to"]))
        elif name == "accept":
            self.accept(self.pick(cmd))
        elif name == "reject":
            call = self.pick(cmd)
            await self.terminate(call, "decline")
        elif name == "hangup":
            call = self.pick(cmd)
            reason = "success" if call.state in ("active", "pending") else "cancel"
            await self.terminate(call, reason)
        elif name == "stats":
            sid = cmd.get("sid") or self.last_sid
            call = self.calls.get(sid or "")
            if call is None:
                emit("stats", sid=sid, live=False)
            else:
                emit("stats", sid=sid, live=True, rtpReceived=call.rtp_received, rtpSent=call.rtp_sent,
                     phases=call.phases, **call.states())
        elif name == "ping":
            emit("pong")
        else:
            raise ValueError(f"unknown command {name!r}")

    async def run(self) -> int:
        self.xmpp.connect((self.args.host, self.args.port), force_starttls=True)
        try:
            await asyncio.wait_for(self.session_started.wait(), timeout=self.args.timeout)
        except asyncio.TimeoutError:
            self.failed = "timed out waiting for the XMPP session"
        if self.failed:
            emit("error", message=self.failed)
            return 1
        emit("ready", jid=self.own_full)

        loop = asyncio.get_running_loop()
        threading.Thread(target=_stdin_reader, args=(loop, self.queue), daemon=True).start()
        while True:
            line = await self.queue.get()
            if line is None:
                break
            line = line.strip()
            if not line:
                continue
            try:
                cmd = json.loads(line)
                if not isinstance(cmd, dict):
                    raise ValueError("not an object")
            except ValueError as e:
                emit("error", message=f"bad command line: {e}")
                continue
            if cmd.get("cmd") == "quit":
                break
            try:
                await self.command(cmd)
            except Exception as e:  # noqa: BLE001
                emit("error", message=f"{type(e).__name__}: {e}", cmd=cmd.get("cmd"))

        for call in list(self.calls.values()):
            await self.terminate(call, "success" if call.connected else "cancel", "peer quits")
        emit("bye")
        self.xmpp.disconnect(wait=1.0)
        try:
            await asyncio.wait_for(self.xmpp.disconnected, timeout=3)
        except Exception:  # noqa: BLE001
            pass
        return 0


def _stdin_reader(loop: asyncio.AbstractEventLoop, queue: "asyncio.Queue[Optional[str]]") -> None:
    try:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line)
    finally:
        loop.call_soon_threadsafe(queue.put_nowait, None)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(ai[4][0]).is_loopback for ai in socket.getaddrinfo(host, None))
        except OSError:
            return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jid", required=True, help="full or bare JID (a resource is bound if bare)")
    parser.add_argument("--password", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5222)
    parser.add_argument("--ca", help="PEM file to trust as CA (e.g. Prosody's self-signed cert)")
    parser.add_argument("--answer", choices=("auto", "manual"), default="auto",
                        help="auto: answer every incoming audio call at once; manual: wait for an accept command")
    parser.add_argument("--bad-fingerprint", action="store_true",
                        help="signal a fingerprint that does not match our DTLS certificate (security tests)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the XMPP session")
    parser.add_argument("--debug", action="store_true", help="verbose logging on stderr")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        rc = loop.run_until_complete(Peer(args).run())
    except KeyboardInterrupt:
        rc = 130
    except BaseException as e:  # noqa: BLE001
        emit("error", message=f"fatal: {type(e).__name__}: {e}")
        rc = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)  # don't hang on the stdin reader thread or lingering tasks


if __name__ == "__main__":
    main()
