#!/usr/bin/python3
"""Independent JET-OMEMO Jingle file-transfer peer (XEP-0234 + XEP-0391/0396 over XEP-0261 IBB or XEP-0260 S5B).

Built only from Debian's packages (python3-slixmpp, python3-oldmemo/omemo, python3-cryptography) and on
omemo_peer.py (same flags, same JSON-lines control protocol, same OMEMO commands). Run it with the system
interpreter::

    /usr/bin/python3 tests/interop/jet_peer.py --jid py@localhost/jet --password pw --host 127.0.0.1 \
        --port 5222 --ca cert.pem --download-dir /tmp/dl [--max-file-size BYTES] [--s5b-host 127.0.0.1]

It behaves like Dino 0.4.2 (tests/fixtures/dino/filetransfer-jet-omemo-s5b-*.xml): content `a-file-offer`
(creator=initiator, senders=initiator), the `<security xmlns='urn:xmpp:jingle:jet:0'>` element inside
`<content>` with `cipher` and `type` but no `name`, `<size>` = plaintext size, an OMEMO key-transport element
for every device of the recipient's bare JID; the stream is ONE AES-128-GCM operation over the whole file with
the 16-byte tag appended (ciphertext ‖ tag); the receiver verifies tag, size and sha-256 and then sends the
final session-terminate (success), as Dino's receiver does. S5B: each side offers one direct candidate on
`--s5b-host`, tries the other's candidates, reports candidate-used / candidate-error in transport-info; the
higher-priority pair wins, on a tie the initiator's choice (XEP-0260). When no pair works, the initiator
sends transport-replace with IBB and the responder answers transport-accept. No proxy candidates.

Commands (in addition to omemo_peer.py's)
  {"cmd":"send_file","to":FULLJID,"path":P,"transport":"ibb"|"s5b","encrypted":true,
   "corrupt":null|"tag"|"truncate","name":NAME?,"block_size":8192?,"hash":true?}
      corrupt (test hook): "tag" flips one bit of the GCM tag, "truncate" leaves out the last 100 bytes.
      hash: put the plaintext sha-256 (XEP-0300) into <file> (default true; Dino 0.4.2 sends none).
      -> {"event":"file_offered","sid":..,"to":..}  once session-initiate was acknowledged
      -> {"event":"file_sent","sid":..,"to":..,"sha256":hex,"bytes":N,"wire_bytes":N,"transport":..,
          "replaced":bool,"encrypted":bool,"devices":[..],"terminated_by":"peer"|"us"}
      or {"event":"file_failed","sid":..,"peer":..,"direction":"send","reason":CONDITION,"text":..}
  {"cmd":"configure","s5b_unreachable":BOOL}
      test hook: our SOCKS5 candidates point at a closed port, so SOCKS5 fails and the initiator
      replaces it with IBB (transport-replace / transport-accept); -> {"event":"configured",..}
Receiving (automatic, into --download-dir)
      -> {"event":"file_incoming","sid":..,"from":..,"name":..,"size":N,"transport":..,"encrypted":bool,
          "security_in":"content"|"jingle"|null,"content":CONTENTNAME,"hashes":[algo..]}
      -> {"event":"file_received","sid":..,"from":..,"path":..,"name":..,"sha256":hex,"bytes":N,
          "transport":..,"replaced":bool,"encrypted":bool,"sender_device":N|null}
      or {"event":"file_failed","sid":..,"peer":..,"direction":"receive","reason":CONDITION,"text":..}
         (no file is left behind: the data goes to a hidden temp file that is renamed only after the checks)
"""

import asyncio
import base64
import hashlib
import os
import secrets
import socket
import sys
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.handler import CoroutineCallback
from slixmpp.xmlstream.matcher import MatchXPath

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from omemo_peer import NS as OMEMO_NS, Peer, arg_parser, emit, log, run_peer  # noqa: E402

NS_JINGLE = "urn:xmpp:jingle:1"
NS_JINGLE_ERRORS = "urn:xmpp:jingle:errors:1"
NS_JFT = "urn:xmpp:jingle:apps:file-transfer:5"
NS_S5B = "urn:xmpp:jingle:transports:s5b:1"
NS_JIBB = "urn:xmpp:jingle:transports:ibb:1"
NS_JET = "urn:xmpp:jingle:jet:0"
NS_JET_OMEMO = "urn:xmpp:jingle:jet-omemo:0"
NS_HASHES = "urn:xmpp:hashes:2"
NS_IBB = "http://jabber.org/protocol/ibb"
NS_BYTESTREAMS = "http://jabber.org/protocol/bytestreams"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
CIPHER = "urn:xmpp:ciphers:aes-128-gcm-nopadding"
CONTENT_NAME = "a-file-offer"
TAG_LENGTH = 16
DIRECT_PRIORITY = 8290304  # what Dino 0.4.2 gives its first direct candidate (type preference 126)
IQ_TIMEOUT = 30
CONNECT_TIMEOUT = 5.0
IO_CHUNK = 64 * 1024


class TransferFailed(Exception):
    """Ends a session with the Jingle reason `condition` (XEP-0166) and a human-readable text."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(f"{condition}: {text}")
        self.condition = condition
        self.text = text


class NoS5bPair(TransferFailed):
    """SOCKS5 failed both ways: the initiator replaces the transport with IBB (XEP-0260 §2.6)."""

    def __init__(self) -> None:
        super().__init__("failed-transport", "no SOCKS5 candidate worked on either side")


# --------------------------------------------------------------------------------------------------
# AES-128-GCM over the whole stream, tag appended (what Conversations and Dino put on the wire)
# --------------------------------------------------------------------------------------------------

class StreamEncryptor:
    """plaintext chunks -> ciphertext chunks; `finish()` returns the 16-byte tag that goes last."""

    def __init__(self, key: bytes, iv: bytes) -> None:
        self._enc = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()

    def update(self, data: bytes) -> bytes:
        return self._enc.update(data)

    def finish(self) -> bytes:
        rest = self._enc.finalize()  # GCM is a stream mode: nothing is held back
        assert rest == b""
        return self._enc.tag


class DecryptingSink:
    """Wire bytes -> plaintext in a hidden temp file; `commit()` checks size, tag and hash, then renames.

    The last 16 bytes seen are always held back: they may be the tag."""

    def __init__(self, directory: Path, name: str, size: int, key: Optional[bytes], iv: Optional[bytes],
                 sha256: Optional[str]) -> None:
        self.final_path = unique_path(directory, name)
        self.temp_path = directory / f".{self.final_path.name}.{secrets.token_hex(4)}.part"
        self.size = size
        self.expected_wire = size + (TAG_LENGTH if key is not None else 0)
        self.expected_sha256 = sha256
        self._dec = Cipher(algorithms.AES(key), modes.GCM(iv)).decryptor() if key is not None else None
        self._tail = b""
        self.wire_bytes = 0
        self.plain_bytes = 0
        self._hash = hashlib.sha256()
        self._file = open(self.temp_path, "xb")
        self.closed = False

    @property
    def complete(self) -> bool:
        return self.wire_bytes >= self.expected_wire

    def feed(self, data: bytes) -> None:
        if self.closed:
            return
        self.wire_bytes += len(data)
        if self.wire_bytes > self.expected_wire:
            raise TransferFailed("media-error", f"received more than the announced {self.expected_wire} bytes")
        if self._dec is None:
            self._write(data)
            return
        buf = self._tail + data
        self._tail = buf[-TAG_LENGTH:]
        body = buf[:-TAG_LENGTH]
        if body:
            self._write(self._dec.update(body))

    def _write(self, plain: bytes) -> None:
        self._hash.update(plain)
        self.plain_bytes += len(plain)
        self._file.write(plain)

    def commit(self) -> Tuple[Path, str]:
        """Verifies everything; on success moves the file into place and returns (path, sha256 hex)."""
        if self.wire_bytes != self.expected_wire:
            raise TransferFailed("failed-transport",
                                 f"stream ended after {self.wire_bytes} of {self.expected_wire} bytes")
        if self._dec is not None:
            try:
                self._dec.finalize_with_tag(self._tail)
            except InvalidTag:
                raise TransferFailed("security-error", "AES-GCM authentication tag mismatch") from None
        if self.plain_bytes != self.size:
            raise TransferFailed("media-error", f"got {self.plain_bytes} plaintext bytes, offer said {self.size}")
        digest = self._hash.hexdigest()
        if self.expected_sha256 is not None and digest != self.expected_sha256:
            raise TransferFailed("media-error", f"sha-256 mismatch: got {digest}, offer said {self.expected_sha256}")
        self._file.close()
        self.closed = True
        os.replace(self.temp_path, self.final_path)
        return self.final_path, digest

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self._file.close()
        try:
            os.unlink(self.temp_path)
        except FileNotFoundError:
            pass


def safe_name(name: str) -> str:
    """Last path component only, no control characters, no leading dots; never empty."""
    base = name.replace("\\", "/").split("/")[-1]
    base = "".join(c for c in base if c.isprintable()).strip().lstrip(".")
    return base[:200] or "file"


def unique_path(directory: Path, name: str) -> Path:
    candidate = directory / safe_name(name)
    stem, suffix = candidate.stem, candidate.suffix
    n = 1
    while candidate.exists():
        candidate = directory / f"{stem} ({n}){suffix}"
        n += 1
    return candidate


def file_sha256(path: str) -> Tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(IO_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def wire_chunks(path: str, key: Optional[bytes], iv: Optional[bytes], chunk: int, corrupt: Optional[str]):
    """Yields the bytes to put on the transport: the file encrypted (ciphertext ‖ tag) or as is."""
    enc = StreamEncryptor(key, iv) if key is not None else None
    pending = b""
    with open(path, "rb") as f:
        while True:
            data = f.read(IO_CHUNK)
            if not data:
                break
            pending += enc.update(data) if enc else data
            while len(pending) >= chunk + 100:  # keep >= 100 bytes back for the "truncate" test hook
                yield pending[:chunk]
                pending = pending[chunk:]
    if enc is not None:
        tag = enc.finish()
        if corrupt == "tag":
            tag = bytes([tag[0] ^ 0x01]) + tag[1:]
        pending += tag
    if corrupt == "truncate":
        pending = pending[:-100] if len(pending) > 100 else b""
    while pending:
        yield pending[:chunk]
        pending = pending[chunk:]


# --------------------------------------------------------------------------------------------------
# SOCKS5 (RFC 1928 subset used by XEP-0065: no auth, CONNECT, ATYP=domain carrying the dstaddr hash)
# --------------------------------------------------------------------------------------------------

def s5b_dstaddr(sid: str, requester: str, target: str) -> str:
    """SHA1(SID + Requester JID + Target JID); the requester is the party that offered the candidate."""
    return hashlib.sha1((sid + requester + target).encode("utf-8")).hexdigest()


async def socks5_connect(host: str, port: int, dstaddr: str) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT)
    try:
        writer.write(b"\x05\x01\x00")
        if await asyncio.wait_for(reader.readexactly(2), CONNECT_TIMEOUT) != b"\x05\x00":
            raise ConnectionError("SOCKS5 server refused the no-auth method")
        addr = dstaddr.encode("ascii")
        writer.write(b"\x05\x01\x00\x03" + bytes([len(addr)]) + addr + b"\x00\x00")
        head = await asyncio.wait_for(reader.readexactly(5), CONNECT_TIMEOUT)
        if head[0] != 5 or head[1] != 0:
            raise ConnectionError(f"SOCKS5 CONNECT failed with status {head[1]}")
        if head[3] != 3:
            raise ConnectionError("SOCKS5 reply without a domain address")
        await asyncio.wait_for(reader.readexactly(head[4] + 2), CONNECT_TIMEOUT)
        return reader, writer
    except BaseException:
        writer.close()
        raise


async def socks5_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
    """Server side of the handshake; returns the requested dstaddr (the caller checks it)."""
    ver, n = await asyncio.wait_for(reader.readexactly(2), CONNECT_TIMEOUT)
    methods = await asyncio.wait_for(reader.readexactly(n), CONNECT_TIMEOUT)
    if ver != 5 or 0 not in methods:
        writer.write(b"\x05\xff")
        raise ConnectionError("SOCKS5 client without the no-auth method")
    writer.write(b"\x05\x00")
    ver, cmd, _rsv, atyp = await asyncio.wait_for(reader.readexactly(4), CONNECT_TIMEOUT)
    if ver != 5 or cmd != 1 or atyp != 3:
        writer.write(b"\x05\x07\x00\x01" + b"\x00" * 6)
        raise ConnectionError("unsupported SOCKS5 request")
    (length,) = await asyncio.wait_for(reader.readexactly(1), CONNECT_TIMEOUT)
    addr = (await asyncio.wait_for(reader.readexactly(length), CONNECT_TIMEOUT)).decode("ascii", "replace")
    await asyncio.wait_for(reader.readexactly(2), CONNECT_TIMEOUT)
    writer.write(b"\x05\x00\x00\x03" + bytes([length]) + addr.encode("ascii", "replace") + b"\x00\x00")
    await writer.drain()
    return addr


@dataclass
class Candidate:
    cid: str
    host: str
    port: int
    jid: str
    priority: int
    type: str = "direct"


Conn = Tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass
class S5bState:
    """One side of XEP-0260 negotiation: our listener, their candidates, both choices."""
    sid: str
    our_dstaddr: str  # what the peer must send when connecting to OUR candidate
    their_dstaddr: str  # what we send when connecting to THEIR candidates
    server: Optional[asyncio.AbstractServer] = None
    ours: List[Candidate] = field(default_factory=list)
    theirs: List[Candidate] = field(default_factory=list)
    inbound: "asyncio.Future[Conn]" = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    our_choice: Optional[Tuple[Candidate, Conn]] = None  # their candidate we reached
    their_choice: "asyncio.Future[Optional[str]]" = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())  # cid of ours, None = error

    def close(self, keep: Optional[Conn] = None) -> None:
        if self.server is not None:
            self.server.close()
        conns = []
        if self.inbound.done() and not self.inbound.cancelled() and self.inbound.exception() is None:
            conns.append(self.inbound.result())
        if self.our_choice is not None:
            conns.append(self.our_choice[1])
        for conn in conns:
            if keep is None or conn[1] is not keep[1]:
                conn[1].close()


@dataclass
class Session:
    sid: str
    peer: str  # full JID
    role: str  # "initiator" (we send) | "responder" (we receive)
    initiator: str
    responder: str
    transport: str  # "ibb" | "s5b"
    transport_sid: str
    name: str
    size: int
    sha256: Optional[str] = None
    key: Optional[bytes] = None
    iv: Optional[bytes] = None
    block_size: int = 8192
    s5b: Optional[S5bState] = None
    sink: Optional[DecryptingSink] = None
    accepted: "asyncio.Future[ET.Element]" = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    terminated: "asyncio.Future[Tuple[str, str]]" = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    ibb_done: "asyncio.Future[None]" = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    finished: bool = False
    sender_device: Optional[int] = None
    replaced: bool = False
    # transport-replace received (responder) / transport-accept|reject received (initiator)
    replace_offer: "asyncio.Future[ET.Element]" = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    replace_answer: "asyncio.Future[Tuple[bool, ET.Element]]" = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


# --------------------------------------------------------------------------------------------------
# XML codecs
# --------------------------------------------------------------------------------------------------

def q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def build_file(name: str, size: int, sha256: Optional[str]) -> ET.Element:
    desc = ET.Element(q(NS_JFT, "description"))
    f = ET.SubElement(desc, q(NS_JFT, "file"))
    ET.SubElement(f, q(NS_JFT, "name")).text = name
    ET.SubElement(f, q(NS_JFT, "size")).text = str(size)
    if sha256 is not None:
        ET.SubElement(f, q(NS_HASHES, "hash"), {"algo": "sha-256"}).text = \
            base64.b64encode(bytes.fromhex(sha256)).decode("ascii")
    return desc


def parse_file(desc: ET.Element) -> Tuple[str, int, Optional[str]]:
    f = desc.find(q(NS_JFT, "file"))
    if f is None:
        raise TransferFailed("failed-application", "description without <file>")
    name = (f.findtext(q(NS_JFT, "name")) or "file").strip()
    size_text = (f.findtext(q(NS_JFT, "size")) or "").strip()
    if not size_text.isdigit():
        raise TransferFailed("failed-application", f"bad or missing <size> {size_text!r}")
    sha = None
    for h in f.findall(q(NS_HASHES, "hash")):
        if h.get("algo") == "sha-256" and h.text:
            try:
                raw = base64.b64decode(h.text.strip(), validate=True)
            except ValueError:
                raise TransferFailed("failed-application", "malformed sha-256 <hash>") from None
            if len(raw) != 32:
                raise TransferFailed("failed-application", "sha-256 <hash> is not 32 bytes")
            sha = raw.hex()
    return name, int(size_text), sha


def build_s5b(sid: str, dstaddr: str, candidates: List[Candidate]) -> ET.Element:
    t = ET.Element(q(NS_S5B, "transport"), {"sid": sid, "dstaddr": dstaddr, "mode": "tcp"})
    for c in candidates:
        ET.SubElement(t, q(NS_S5B, "candidate"), {
            "cid": c.cid, "host": c.host, "jid": c.jid, "port": str(c.port),
            "priority": str(c.priority), "type": c.type,
        })
    return t


def parse_candidates(t: ET.Element) -> List[Candidate]:
    out = []
    for c in t.findall(q(NS_S5B, "candidate")):
        try:
            out.append(Candidate(c.get("cid", ""), c.get("host", ""), int(c.get("port", "1080")),
                                 c.get("jid", ""), int(c.get("priority", "0")), c.get("type", "direct")))
        except ValueError:
            continue  # a malformed candidate is skipped, not fatal
    return sorted(out, key=lambda c: -c.priority)


def jingle(action: str, sid: str, **attrs: str) -> ET.Element:
    return ET.Element(q(NS_JINGLE, "jingle"), {"action": action, "sid": sid, **attrs})


def content(parent: ET.Element, creator: str = "initiator", senders: Optional[str] = "initiator") -> ET.Element:
    attrs = {"creator": creator, "name": CONTENT_NAME}
    if senders:
        attrs["senders"] = senders
    return ET.SubElement(parent, q(NS_JINGLE, "content"), attrs)


def find_security(jingle_el: ET.Element, content_el: ET.Element) -> Tuple[Optional[ET.Element], Optional[str]]:
    """`<security>` inside `<content>` (XEP, Dino, Conversations 2.12) or under `<jingle>` (newer Conversations);
    returns it and where it was ("content" / "jingle")."""
    for parent, where in ((content_el, "content"), (jingle_el, "jingle")):
        for sec in parent.findall(q(NS_JET, "security")):
            if sec.get("type") == OMEMO_NS:
                return sec, where
    return None, None


# --------------------------------------------------------------------------------------------------
# The peer
# --------------------------------------------------------------------------------------------------

class JetPeer(Peer):
    def __init__(self, args: Any) -> None:
        super().__init__(args)
        self.download_dir = Path(args.download_dir).resolve() if args.download_dir else None
        self.sessions: Dict[str, Session] = {}
        self.tasks: set = set()
        self.s5b_unreachable = False
        self.xmpp.register_plugin("xep_0047", {"block_size": 8192, "max_block_size": 65535})
        ibb = self.xmpp["xep_0047"]
        ibb.api.register(self._ibb_authorized, "authorized")  # only streams announced in a Jingle session
        self.xmpp.add_event_handler("session_bind", self._add_features)
        self.xmpp.register_handler(CoroutineCallback(
            "Jingle", MatchXPath(f"{{{self.xmpp.default_ns}}}iq/{{{NS_JINGLE}}}jingle"), self._on_jingle))
        self.xmpp.add_event_handler("ibb_stream_data", self._on_ibb_data)
        self.xmpp.add_event_handler("ibb_stream_end", self._on_ibb_end)
        self.xmpp.add_event_handler("session_start", self._set_nodelay)

    def _add_features(self, _jid: Any) -> None:
        # After resource binding: slixmpp keys disco info by the full JID the server bound.
        disco = self.xmpp["xep_0030"]
        for feature in (NS_JINGLE, NS_JFT, NS_S5B, NS_JIBB, NS_JET, NS_JET_OMEMO, NS_IBB, NS_BYTESTREAMS):
            disco.add_feature(feature)

    def _set_nodelay(self, _event: Any) -> None:
        # Without it every IBB block waits out Nagle + delayed ACK (~40 ms per round trip on loopback).
        sock = self.xmpp.transport.get_extra_info("socket") if self.xmpp.transport else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def extra_command(self, name: str, cmd: Dict[str, Any]) -> bool:
        if name == "configure":
            self.s5b_unreachable = bool(cmd.get("s5b_unreachable", False))
            emit("configured", s5b_unreachable=self.s5b_unreachable)
            return True
        if name != "send_file":
            return False
        transport = cmd.get("transport", "ibb")
        if transport not in ("ibb", "s5b"):
            raise ValueError(f"transport must be ibb or s5b, not {transport!r}")
        if not os.path.isfile(cmd["path"]):
            raise ValueError(f"no such file: {cmd['path']}")
        self.spawn(self.send_file(cmd["to"], cmd["path"], transport, bool(cmd.get("encrypted", True)),
                                  cmd.get("corrupt"), cmd.get("name"), int(cmd.get("block_size", 8192)),
                                  bool(cmd.get("hash", True))))
        return True

    # ---- IQ plumbing ----
    def iq_result(self, iq: Any) -> None:
        iq.reply().send()

    def iq_error(self, iq: Any, etype: str, condition: str, jingle_condition: Optional[str] = None) -> None:
        reply = iq.reply()
        reply["type"] = "error"
        err = ET.SubElement(reply.xml, f"{{{self.xmpp.default_ns}}}error", {"type": etype})
        ET.SubElement(err, q(NS_STANZAS, condition))
        if jingle_condition:
            ET.SubElement(err, q(NS_JINGLE_ERRORS, jingle_condition))
        reply.send()

    async def send_jingle(self, to: str, el: ET.Element) -> None:
        iq = self.xmpp.make_iq_set(ito=to)
        iq.append(el)
        await iq.send(timeout=IQ_TIMEOUT)

    async def terminate(self, s: Session, condition: str, text: Optional[str] = None) -> None:
        el = jingle("session-terminate", s.sid)
        reason = ET.SubElement(el, q(NS_JINGLE, "reason"))
        ET.SubElement(reason, q(NS_JINGLE, condition))
        if text:
            ET.SubElement(reason, q(NS_JINGLE, "text")).text = text
        try:
            await self.send_jingle(s.peer, el)
        except (IqError, IqTimeout) as e:
            log.warning("session-terminate of %s not acknowledged: %s", s.sid, e)

    def fail(self, s: Session, condition: str, text: str) -> None:
        if s.finished:
            return
        s.finished = True
        if s.sink is not None:
            s.sink.abort()
        if s.s5b is not None:
            s.s5b.close()
        self.sessions.pop(s.sid, None)
        emit("file_failed", sid=s.sid, peer=s.peer, direction="send" if s.role == "initiator" else "receive",
             reason=condition, text=text)

    # ---- incoming Jingle ----
    async def _on_jingle(self, iq: Any) -> None:
        try:
            await self._handle_jingle(iq)
        except Exception:  # noqa: BLE001 - one bad stanza must not take the peer down
            log.exception("jingle handler failed")
            try:
                self.iq_error(iq, "cancel", "internal-server-error")
            except Exception:  # noqa: BLE001
                pass

    async def _handle_jingle(self, iq: Any) -> None:
        if iq["type"] != "set":
            return
        el = iq.xml.find(q(NS_JINGLE, "jingle"))
        action, sid, sender = el.get("action"), el.get("sid"), str(iq["from"])
        if not action or not sid:
            self.iq_error(iq, "modify", "bad-request")
            return
        if action == "session-initiate":
            if sid in self.sessions:
                self.iq_error(iq, "cancel", "conflict")
                return
            if el.find(f"{q(NS_JINGLE, 'content')}/{q(NS_JFT, 'description')}") is None:
                self.iq_error(iq, "cancel", "feature-not-implemented")
                return
            self.iq_result(iq)  # ack first, decide afterwards (as Dino does)
            self.spawn(self.receive_offer(sender, el))
            return
        s = self.sessions.get(sid)
        if s is None or s.peer != sender:
            self.iq_error(iq, "cancel", "item-not-found", "unknown-session")
            return
        if action == "session-accept":
            if s.role != "initiator" or s.accepted.done():
                self.iq_error(iq, "cancel", "unexpected-request", "out-of-order")
                return
            self.iq_result(iq)
            s.accepted.set_result(el)
        elif action == "transport-info":
            self.iq_result(iq)
            self._on_transport_info(s, el)
        elif action == "session-terminate":
            self.iq_result(iq)
            reason = el.find(q(NS_JINGLE, "reason"))
            condition, text = "unknown", ""
            if reason is not None:
                for child in reason:
                    local = child.tag.split("}")[-1]
                    if local == "text":
                        text = child.text or ""
                    elif child.tag.startswith(f"{{{NS_JINGLE}}}"):
                        condition = local
            if not s.terminated.done():
                s.terminated.set_result((condition, text))
            if s.role == "responder" and not s.finished:
                self.fail(s, condition, text or "the sender ended the session")
            if not s.accepted.done():
                s.accepted.cancel()
        elif action == "session-info":
            self.iq_result(iq)  # <checksum> and the like: informational only
        elif action == "transport-replace":
            if s.role != "responder" or s.replace_offer.done():
                self.iq_error(iq, "cancel", "unexpected-request", "out-of-order")
                return
            self.iq_result(iq)
            s.replace_offer.set_result(el)
        elif action in ("transport-accept", "transport-reject"):
            if s.role != "initiator" or s.replace_answer.done():
                self.iq_error(iq, "cancel", "unexpected-request", "out-of-order")
                return
            self.iq_result(iq)
            s.replace_answer.set_result((action == "transport-accept", el))
        else:
            self.iq_error(iq, "cancel", "feature-not-implemented", "unsupported-info")

    def _on_transport_info(self, s: Session, el: ET.Element) -> None:
        t = el.find(f"{q(NS_JINGLE, 'content')}/{q(NS_S5B, 'transport')}")
        if t is None or s.s5b is None or s.s5b.their_choice.done():
            return
        used = t.find(q(NS_S5B, "candidate-used"))
        if used is not None:
            s.s5b.their_choice.set_result(used.get("cid", ""))
        elif t.find(q(NS_S5B, "candidate-error")) is not None:
            s.s5b.their_choice.set_result(None)

    # ---- IBB ----
    async def _ibb_authorized(self, jid: Any, sid: str, ifrom: Any, iq: Any) -> bool:
        s = next((x for x in self.sessions.values() if x.transport == "ibb" and x.transport_sid == sid), None)
        ok = s is not None and s.role == "responder" and s.peer == str(ifrom)
        if ok:
            s.block_size = min(s.block_size, int(iq["ibb_open"]["block_size"] or s.block_size))
        return ok

    def _ibb_session(self, stream: Any) -> Optional[Session]:
        return next((x for x in self.sessions.values()
                     if x.transport == "ibb" and x.transport_sid == stream.sid and x.role == "responder"
                     and x.peer == str(stream.peer_jid)), None)

    def _on_ibb_data(self, stream: Any) -> None:
        s = self._ibb_session(stream)
        if s is None or s.sink is None or s.finished:
            return
        try:
            while not stream.recv_queue.empty():
                s.sink.feed(stream.recv_queue.get_nowait())
        except TransferFailed as e:
            if not s.ibb_done.done():
                s.ibb_done.set_exception(e)

    def _on_ibb_end(self, stream: Any) -> None:
        s = self._ibb_session(stream)
        if s is not None and not s.ibb_done.done():
            s.ibb_done.set_result(None)

    # ---- S5B ----
    async def s5b_listen(self, st: S5bState) -> None:
        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                addr = await socks5_accept(reader, writer)
            except Exception as e:  # noqa: BLE001
                log.warning("SOCKS5 handshake failed: %s", e)
                writer.close()
                return
            if addr != st.our_dstaddr or st.inbound.done():
                log.warning("SOCKS5 connection for an unknown dstaddr %s refused", addr)
                writer.close()
                return
            st.inbound.set_result((reader, writer))

        if self.s5b_unreachable:  # test hook: offer a port nobody listens on
            probe = socket.socket()
            probe.bind((self.args.s5b_host, 0))
            port = probe.getsockname()[1]
            probe.close()
        else:
            st.server = await asyncio.start_server(on_client, self.args.s5b_host, 0)
            port = st.server.sockets[0].getsockname()[1]
        st.ours = [Candidate(str(uuid.uuid4()), self.args.s5b_host, port, str(self.xmpp.boundjid),
                             DIRECT_PRIORITY)]

    async def s5b_try_theirs(self, s: Session) -> None:
        """Connect to the peer's candidates in priority order; report candidate-used / candidate-error."""
        st = s.s5b
        assert st is not None
        for c in st.theirs:
            if c.type != "direct":
                continue  # proxies are out of scope for this peer
            try:
                conn = await socks5_connect(c.host, c.port, st.their_dstaddr)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError) as e:
                log.info("candidate %s %s:%d failed: %s", c.cid, c.host, c.port, e)
                continue
            st.our_choice = (c, conn)
            break
        el = jingle("transport-info", s.sid, initiator=s.initiator)
        t = ET.SubElement(content(el, senders=None), q(NS_S5B, "transport"), {"sid": st.sid})
        if st.our_choice is not None:
            ET.SubElement(t, q(NS_S5B, "candidate-used"), {"cid": st.our_choice[0].cid})
        else:
            ET.SubElement(t, q(NS_S5B, "candidate-error"))
        await self.send_jingle(s.peer, el)

    async def s5b_select(self, s: Session) -> Conn:
        """XEP-0260 §2.4: the candidate pair with the higher priority wins; on a tie the initiator's choice."""
        st = s.s5b
        assert st is not None
        their_cid = await asyncio.wait_for(st.their_choice, IQ_TIMEOUT)
        ours_used = next((c for c in st.ours if c.cid == their_cid), None) if their_cid else None
        if their_cid and ours_used is None:
            raise TransferFailed("failed-transport", f"peer used a candidate we never offered: {their_cid}")
        mine = st.our_choice
        if mine is None and ours_used is None:
            st.close()
            raise NoS5bPair()
        use_inbound: bool
        if mine is None:
            use_inbound = True
        elif ours_used is None:
            use_inbound = False
        elif ours_used.priority != mine[0].priority:
            use_inbound = ours_used.priority > mine[0].priority
        else:  # tie: the initiator's choice, i.e. the connection the initiator opened
            use_inbound = s.role == "responder"
        if use_inbound:
            conn = await asyncio.wait_for(st.inbound, CONNECT_TIMEOUT * 2)
        else:
            assert mine is not None
            conn = mine[1]
        st.close(keep=conn)
        return conn

    # ---- sending ----
    async def send_file(self, to: str, path: str, transport: str, encrypted: bool, corrupt: Optional[str],
                        name: Optional[str], block_size: int, with_hash: bool = True) -> None:
        sid = str(uuid.uuid4())
        sha256, size = file_sha256(path)
        s = Session(sid=sid, peer=to, role="initiator", initiator=str(self.xmpp.boundjid), responder=to,
                    transport=transport, transport_sid=str(uuid.uuid4()), name=name or os.path.basename(path),
                    size=size, sha256=sha256, block_size=block_size)
        self.sessions[sid] = s
        devices: List[int] = []
        try:
            el = jingle("session-initiate", sid, initiator=s.initiator)
            c = content(el)
            c.append(build_file(s.name, size, sha256 if with_hash else None))
            if transport == "ibb":
                ET.SubElement(c, q(NS_JIBB, "transport"), {"sid": s.transport_sid, "block-size": str(block_size)})
            else:
                s.s5b = S5bState(s.transport_sid, s5b_dstaddr(s.transport_sid, s.initiator, to),
                                 s5b_dstaddr(s.transport_sid, to, s.initiator))
                await self.s5b_listen(s.s5b)
                c.append(build_s5b(s.transport_sid, s.s5b.our_dstaddr, s.s5b.ours))
            if encrypted:
                import oldmemo.etree
                bare = to.split("/")[0]
                async with self.lock:
                    message, pkm, omemo_content, devices = await self.encrypt_custom(bare, None, None)
                s.key, s.iv = pkm.key, omemo_content.initialization_vector
                sec = ET.SubElement(c, q(NS_JET, "security"), {"cipher": CIPHER, "type": OMEMO_NS})
                sec.append(oldmemo.etree.serialize_message(message))
            try:
                await self.send_jingle(to, el)
            except (IqError, IqTimeout) as e:
                raise TransferFailed("connectivity-error", f"session-initiate refused: {e}") from None
            emit("file_offered", sid=sid, to=to)

            accepted = asyncio.ensure_future(s.accepted)
            await asyncio.wait({accepted, s.terminated}, return_when=asyncio.FIRST_COMPLETED)
            if s.terminated.done():
                raise TransferFailed(*s.terminated.result())
            accept = accepted.result()
            ac = accept.find(q(NS_JINGLE, "content"))
            if ac is None:
                raise TransferFailed("failed-application", "session-accept without <content>")

            if transport == "ibb":
                t = ac.find(q(NS_JIBB, "transport"))
                if t is None:
                    raise TransferFailed("failed-transport", "session-accept without an IBB transport")
                s.block_size = min(block_size, int(t.get("block-size", block_size)))
                wire = await self.send_ibb(s, path, corrupt)
            else:
                t = ac.find(q(NS_S5B, "transport"))
                if t is None:
                    raise TransferFailed("failed-transport", "session-accept without a SOCKS5 transport")
                assert s.s5b is not None
                s.s5b.theirs = parse_candidates(t)
                await self.s5b_try_theirs(s)
                try:
                    _reader, writer = await self.s5b_select(s)
                except NoS5bPair:
                    await self.replace_with_ibb(s, block_size)
                    writer = None
                    wire = await self.send_ibb(s, path, corrupt)
                if writer is not None:
                    wire = 0
                    for chunk in wire_chunks(path, s.key, s.iv, IO_CHUNK, corrupt):
                        writer.write(chunk)
                        await writer.drain()
                        wire += len(chunk)
                    writer.close()

            # Dino's receiver ends the session once it checked the file; wait for that.
            try:
                condition, text = await asyncio.wait_for(asyncio.shield(s.terminated), 60)
                by = "peer"
            except asyncio.TimeoutError:
                await self.terminate(s, "success")
                condition, text, by = "success", "", "us"
            if condition != "success":
                raise TransferFailed(condition, text)
            s.finished = True
            self.sessions.pop(sid, None)
            emit("file_sent", sid=sid, to=to, sha256=sha256, bytes=size, wire_bytes=wire, transport=s.transport,
                 replaced=s.replaced, encrypted=encrypted, devices=sorted(devices), terminated_by=by)
        except TransferFailed as e:
            if not s.terminated.done():
                await self.terminate(s, e.condition, e.text)
            self.fail(s, e.condition, e.text)
        except Exception as e:  # noqa: BLE001
            # An IQ error on a data block usually means the receiver gave up; its session-terminate
            # (with the real reason) is then on its way.
            log.info("sending %s failed: %s: %s", sid, type(e).__name__, e)
            try:
                condition, text = await asyncio.wait_for(asyncio.shield(s.terminated), 5)
            except asyncio.TimeoutError:
                condition, text = "failed-application", f"{type(e).__name__}: {e}"
                await self.terminate(s, condition, text)
            self.fail(s, condition, text)

    async def send_ibb(self, s: Session, path: str, corrupt: Optional[str]) -> int:
        stream = await self.xmpp["xep_0047"].open_stream(s.peer, block_size=s.block_size, sid=s.transport_sid)
        wire = 0
        for chunk in wire_chunks(path, s.key, s.iv, s.block_size, corrupt):
            if s.terminated.done():
                raise TransferFailed(*s.terminated.result())
            await stream.send(chunk, timeout=IQ_TIMEOUT)
            wire += len(chunk)
        await stream.close(timeout=IQ_TIMEOUT)
        return wire

    async def replace_with_ibb(self, s: Session, block_size: int) -> None:
        """Initiator: transport-replace with IBB, then wait for transport-accept."""
        ibb_sid = str(uuid.uuid4())
        el = jingle("transport-replace", s.sid, initiator=s.initiator)
        ET.SubElement(content(el), q(NS_JIBB, "transport"), {"sid": ibb_sid, "block-size": str(block_size)})
        try:
            await self.send_jingle(s.peer, el)
        except (IqError, IqTimeout) as e:
            raise TransferFailed("failed-transport", f"transport-replace refused: {e}") from None
        answer = asyncio.ensure_future(s.replace_answer)
        await asyncio.wait({answer, s.terminated}, timeout=IQ_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if s.terminated.done():
            raise TransferFailed(*s.terminated.result())
        if not answer.done():
            raise TransferFailed("timeout", "no answer to transport-replace")
        accepted, reply = answer.result()
        t = reply.find(f"{q(NS_JINGLE, 'content')}/{q(NS_JIBB, 'transport')}")
        if not accepted or t is None or t.get("sid") != ibb_sid:
            raise TransferFailed("failed-transport", "the peer rejected IBB after SOCKS5 failed")
        s.transport, s.transport_sid, s.replaced = "ibb", ibb_sid, True
        s.block_size = min(block_size, int(t.get("block-size", block_size)))

    async def accept_replacement(self, s: Session) -> None:
        """Responder: SOCKS5 failed both ways; take the initiator's IBB transport-replace."""
        offer = asyncio.ensure_future(s.replace_offer)
        await asyncio.wait({offer, s.terminated}, timeout=IQ_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if s.terminated.done() or s.finished:
            raise TransferFailed(*s.terminated.result())
        if not offer.done():
            raise TransferFailed("timeout", "SOCKS5 failed and the initiator did not replace the transport")
        el = offer.result()
        c = el.find(q(NS_JINGLE, "content"))
        t = c.find(q(NS_JIBB, "transport")) if c is not None else None
        if t is None or not t.get("sid"):
            reject = jingle("transport-reject", s.sid, initiator=s.initiator)
            if c is not None:
                reject.append(c)
            await self.send_jingle(s.peer, reject)
            raise TransferFailed("failed-transport", "transport-replace with something other than IBB")
        # Switch before transport-accept goes out: the IBB <open/> may follow right after it.
        s.transport, s.transport_sid, s.replaced = "ibb", t.get("sid"), True
        s.block_size = min(8192, int(t.get("block-size", "8192")))
        accept = jingle("transport-accept", s.sid, initiator=s.initiator)
        ET.SubElement(content(accept), q(NS_JIBB, "transport"),
                      {"sid": s.transport_sid, "block-size": str(s.block_size)})
        await self.send_jingle(s.peer, accept)

    async def receive_ibb(self, s: Session) -> None:
        await asyncio.wait({s.ibb_done, s.terminated}, timeout=600, return_when=asyncio.FIRST_COMPLETED)
        if s.finished:
            return  # terminated by the sender meanwhile
        if not s.ibb_done.done():
            raise TransferFailed("timeout", "the IBB stream did not finish")
        s.ibb_done.result()  # raises the sink's TransferFailed

    # ---- receiving ----
    async def receive_offer(self, sender: str, el: ET.Element) -> None:
        c = el.find(q(NS_JINGLE, "content"))
        desc = c.find(q(NS_JFT, "description"))
        ibb_t, s5b_t = c.find(q(NS_JIBB, "transport")), c.find(q(NS_S5B, "transport"))
        t = ibb_t if ibb_t is not None else s5b_t
        sid = el.get("sid")
        s = Session(sid=sid, peer=sender, role="responder", initiator=el.get("initiator") or sender,
                    responder=str(self.xmpp.boundjid), transport="ibb" if ibb_t is not None else "s5b",
                    transport_sid=(t.get("sid") if t is not None else None) or sid, name="file", size=0)
        self.sessions[sid] = s
        try:
            if t is None:
                raise TransferFailed("unsupported-transports", "neither IBB nor SOCKS5 offered")
            if c.get("senders", "initiator") != "initiator":
                raise TransferFailed("failed-application", "only offers (senders=initiator) are accepted")
            if self.download_dir is None:
                raise TransferFailed("decline", "this peer was started without --download-dir")
            s.name, s.size, s.sha256 = parse_file(desc)
            if s.size > self.args.max_file_size:
                raise TransferFailed("decline", f"{s.size} bytes is more than the limit {self.args.max_file_size}")
            sec, security_in = find_security(el, c)
            if sec is not None:
                if sec.get("cipher") != CIPHER:
                    raise TransferFailed("security-error", f"unsupported cipher {sec.get('cipher')!r}")
                enc = sec.find(q(OMEMO_NS, "encrypted"))
                if enc is None:
                    raise TransferFailed("security-error", "<security> without an OMEMO <encrypted>")
                await self.omemo_ready.wait()
                try:
                    plaintext, device, key, iv = await self.decrypt(sender.split("/")[0], enc)
                except Exception as e:  # noqa: BLE001
                    raise TransferFailed("security-error",
                                         f"OMEMO key transport not usable: {type(e).__name__}: {e}") from None
                if plaintext is not None or len(key) != 16 or len(iv) != 12:
                    raise TransferFailed("security-error",
                                         f"unexpected key transport (key {len(key)} B, iv {len(iv)} B)")
                s.key, s.iv, s.sender_device = key, iv, device.device_id
            emit("file_incoming", sid=sid, **{"from": sender}, name=s.name, size=s.size, transport=s.transport,
                 encrypted=s.key is not None, security_in=security_in, content=c.get("name"),
                 hashes=[h.get("algo") for h in desc.iter(q(NS_HASHES, "hash"))])
            s.sink = DecryptingSink(self.download_dir, s.name, s.size, s.key, s.iv, s.sha256)

            accept = jingle("session-accept", sid)
            ac = content(accept, creator=c.get("creator", "initiator"))
            ac.append(build_file(s.name, s.size, s.sha256))
            if s.transport == "ibb":
                s.block_size = min(8192, int(ibb_t.get("block-size", "8192")))
                ET.SubElement(ac, q(NS_JIBB, "transport"),
                              {"sid": s.transport_sid, "block-size": str(s.block_size)})
            else:
                s.s5b = S5bState(s.transport_sid, s5b_dstaddr(s.transport_sid, s.responder, s.initiator),
                                 s5b_dstaddr(s.transport_sid, s.initiator, s.responder))
                s.s5b.theirs = parse_candidates(s5b_t)
                await self.s5b_listen(s.s5b)
                ac.append(build_s5b(s.transport_sid, s.s5b.our_dstaddr, s.s5b.ours))
            try:
                await self.send_jingle(sender, accept)
            except (IqError, IqTimeout) as e:
                raise TransferFailed("connectivity-error", f"session-accept refused: {e}") from None

            if s.transport == "ibb":
                await self.receive_ibb(s)
            else:
                await self.s5b_try_theirs(s)
                try:
                    reader, writer = await self.s5b_select(s)
                except NoS5bPair:
                    await self.accept_replacement(s)
                    await self.receive_ibb(s)
                else:
                    try:
                        while not s.sink.complete:
                            data = await asyncio.wait_for(reader.read(IO_CHUNK), 120)
                            if not data:
                                break
                            s.sink.feed(data)
                    finally:
                        writer.close()
            if s.finished:
                return
            path, digest = s.sink.commit()
            s.finished = True
            self.sessions.pop(sid, None)
            await self.terminate(s, "success")
            emit("file_received", sid=sid, **{"from": sender}, path=str(path), name=s.name, sha256=digest,
                 bytes=s.sink.plain_bytes, transport=s.transport, replaced=s.replaced, encrypted=s.key is not None,
                 sender_device=s.sender_device)
        except TransferFailed as e:
            if not s.finished:
                await self.terminate(s, e.condition, e.text)
            self.fail(s, e.condition, e.text)
        except Exception as e:  # noqa: BLE001
            log.exception("receiving %s failed", sid)
            if not s.finished:
                await self.terminate(s, "failed-application", f"{type(e).__name__}: {e}")
            self.fail(s, "failed-application", f"{type(e).__name__}: {e}")


def main() -> None:
    parser = arg_parser(__doc__.split("\n")[0])
    parser.add_argument("--download-dir", help="accept offered files into this folder")
    parser.add_argument("--max-file-size", type=int, default=1 << 30, help="decline bigger offers (bytes)")
    parser.add_argument("--s5b-host", default="127.0.0.1", help="address of our direct SOCKS5 candidate")
    run_peer(JetPeer, parser.parse_args())


if __name__ == "__main__":
    main()
