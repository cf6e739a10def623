#!/usr/bin/python3
"""Independent OMEMO 0.3 (``eu.siacs.conversations.axolotl``) interop peer.

Built only from Debian's packages, so run it with the system interpreter (NOT the pyenv python3 that
may come first on PATH)::

    /usr/bin/python3 tests/interop/omemo_peer.py --jid alice@localhost --password pw \
        --host 127.0.0.1 --port 5222 [--ca /path/to/prosody/cert.crt] [--state alice.json]

Requires python3-slixmpp (1.8.x), python3-omemo (python-omemo 1.x), python3-oldmemo, python3-xmlschema.
The OMEMO crypto (X3DH, double ratchet, AES-128-GCM payload with key||tag as the ratchet plaintext,
``prekey='true'`` keys for PreKeySignalMessages) and the XML (de)serialisation of bundles, device lists
and ``<encrypted>`` elements come from python-omemo/oldmemo; this file only wires them to XMPP.

TLS: STARTTLS is required. With ``--ca FILE`` the server certificate is verified against that file (the
hostname checked is the JID's domain). Without ``--ca`` certificate verification is disabled, which is
only allowed when ``--host`` is a loopback address.

PEP: the bundle is published to ``eu.siacs.conversations.axolotl.bundles:<device id>`` and the device
list to ``eu.siacs.conversations.axolotl.devicelist`` (item id ``current``), both with publish-options
``pubsub#access_model=open``. Trust is blind: every device is trusted, except none.

Control protocol: one JSON object per line on stdin; events are JSON lines on stdout (flushed after
each one); logs go to stderr. EOF on stdin == ``quit``. Commands are processed strictly in order.

Commands
  {"cmd":"send","to":BAREJID,"body":TEXT}
      OMEMO-encrypted <message type='chat'> to all devices of BAREJID (and our own other devices), with
      a plain fallback <body>, <store xmlns='urn:xmpp:hints'/> and
      <encryption xmlns='urn:xmpp:eme:0' namespace='eu.siacs.conversations.axolotl' name='OMEMO'/>.
      -> {"event":"sent","to":..,"id":..,"devices":[..]}
  {"cmd":"key_transport","to":BAREJID}
      Message with only an <encrypted> key-transport element (no <payload>; the ratchet encrypts the
      bare 16-byte key) for every active device of BAREJID.
      -> {"event":"key_transport_sent","to":..,"key":b64,"iv":b64,"devices":[..]}
  {"cmd":"encrypt_element","to":BAREJID,"device":ID,"plaintext":TEXT}
      -> {"event":"encrypted_element","xml":"<encrypted xmlns=...>...</encrypted>"} encrypted for
      exactly that one device (not sent anywhere).
  {"cmd":"decrypt_element","from":BAREJID,"xml":"<encrypted ...>"}
      -> {"event":"decrypted","from":..,"plaintext":TEXT|null,"sender_device":N,"key":b64,"iv":b64}
  {"cmd":"devices","jid":BAREJID}     -> {"event":"devices","jid":..,"devices":[ids]} (fresh PEP fetch)
  {"cmd":"ping"}                      -> {"event":"pong"}
  {"cmd":"quit"}                      -> exits (after {"event":"bye"})

Events
  {"event":"ready","jid":..,"device_id":N,"fingerprint":hex,"identity_key":b64}
      fingerprint = hex of the 32-byte Curve25519 identity public key (what Conversations shows);
      identity_key = base64 of the 33-byte 0x05-prefixed key as published in the bundle.
  {"event":"message","from":..,"body":..,"sender_device":N,"id":..}
      every received OMEMO message with a payload.
  {"event":"key_transport","from":..,"key":b64,"iv":b64,"sender_device":N}
      every received OMEMO message without payload. NOTE: this includes the empty "session completion"
      / heartbeat messages that OMEMO implementations (python-omemo too) send automatically after
      receiving a PreKeySignalMessage; they are indistinguishable on the wire from key transport.
  {"event":"error","message":..,"cmd":..?}

Note: python-omemo itself sends such an empty message right after it decrypted a PreKeySignalMessage
(to complete the handshake) — expect the other side to receive one.
"""

import argparse
import asyncio
import base64
import ipaddress
import json
import logging
import os
import socket
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, FrozenSet, Optional

import omemo
import oldmemo
import oldmemo.etree
import xeddsa
from omemo.session import Initiation
from omemo.storage import Just, Maybe, Nothing, Storage
from omemo.types import DeviceInformation, JSONType, TrustLevel
from slixmpp import ClientXMPP
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream import tostring
from slixmpp.xmlstream.handler import CoroutineCallback
from slixmpp.xmlstream.matcher import MatchXPath

NS = oldmemo.oldmemo.NAMESPACE  # eu.siacs.conversations.axolotl
DEVICELIST_NODE = f"{NS}.devicelist"
BUNDLE_NODE = f"{NS}.bundles:"
PUBSUB = "http://jabber.org/protocol/pubsub"
FALLBACK_BODY = "I sent you an OMEMO encrypted message but your client doesn't seem to support that."
IQ_TIMEOUT = 15

log = logging.getLogger("omemo_peer")

_stdout_lock = threading.Lock()


def emit(event: str, **fields: Any) -> None:
    line = json.dumps({"event": event, **fields})
    with _stdout_lock:
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            pass  # controller went away; we exit on stdin EOF anyway


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------------------------------
# Storage: in-memory dict, optionally persisted to a JSON file after every write.
# --------------------------------------------------------------------------------------------------

class DictStorage(Storage):
    def __init__(self, path: Optional[str]) -> None:
        super().__init__()
        self._path = path
        self._data: Dict[str, JSONType] = {}
        if path and os.path.exists(path):
            with open(path, "r", encoding="utf-8") as f:
                self._data = json.load(f)

    def _flush(self) -> None:
        if not self._path:
            return
        tmp = self._path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self._data, f)
        os.replace(tmp, self._path)

    async def _load(self, key: str) -> Maybe[JSONType]:
        if key in self._data:
            return Just(self._data[key])
        return Nothing()

    async def _store(self, key: str, value: JSONType) -> Any:
        self._data[key] = value
        self._flush()

    async def _delete(self, key: str) -> Any:
        self._data.pop(key, None)
        self._flush()


# --------------------------------------------------------------------------------------------------
# PEP helpers (raw XML, so the exact wire format is obvious)
# --------------------------------------------------------------------------------------------------

def _publish_options_open() -> ET.Element:
    po = ET.Element(f"{{{PUBSUB}}}publish-options")
    x = ET.SubElement(po, "{jabber:x:data}x", {"type": "submit"})
    f1 = ET.SubElement(x, "{jabber:x:data}field", {"var": "FORM_TYPE", "type": "hidden"})
    ET.SubElement(f1, "{jabber:x:data}value").text = f"{PUBSUB}#publish-options"
    f2 = ET.SubElement(x, "{jabber:x:data}field", {"var": "pubsub#access_model"})
    ET.SubElement(f2, "{jabber:x:data}value").text = "open"
    return po


class Pep:
    def __init__(self, xmpp: ClientXMPP) -> None:
        self.xmpp = xmpp

    async def publish(self, node: str, item_id: str, payload: ET.Element) -> None:
        iq = self.xmpp.Iq(stype="set")
        pubsub = ET.Element(f"{{{PUBSUB}}}pubsub")
        publish = ET.SubElement(pubsub, f"{{{PUBSUB}}}publish", {"node": node})
        item = ET.SubElement(publish, f"{{{PUBSUB}}}item", {"id": item_id})
        item.append(payload)
        pubsub.append(_publish_options_open())
        iq.append(pubsub)
        await iq.send(timeout=IQ_TIMEOUT)

    async def get_item_payload(self, jid: str, node: str) -> Optional[ET.Element]:
        """Returns the payload of the (single/newest) item, None if node or item does not exist."""
        iq = self.xmpp.Iq(stype="get", sto=jid)
        pubsub = ET.Element(f"{{{PUBSUB}}}pubsub")
        ET.SubElement(pubsub, f"{{{PUBSUB}}}items", {"node": node, "max_items": "1"})
        iq.append(pubsub)
        try:
            result = await iq.send(timeout=IQ_TIMEOUT)
        except IqError as e:
            if e.condition == "item-not-found":
                return None
            raise
        items = result.xml.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}items")
        if items is None:
            return None
        item_elts = items.findall(f"{{{PUBSUB}}}item")
        if not item_elts:
            return None
        # Prefer the item with id 'current', else the last one.
        chosen = next((i for i in item_elts if i.get("id") == "current"), item_elts[-1])
        children = list(chosen)
        return children[0] if children else None

    async def delete_node(self, node: str) -> None:
        iq = self.xmpp.Iq(stype="set")
        pubsub = ET.Element(f"{{{PUBSUB}#owner}}pubsub")
        ET.SubElement(pubsub, f"{{{PUBSUB}#owner}}delete", {"node": node})
        iq.append(pubsub)
        await iq.send(timeout=IQ_TIMEOUT)


# --------------------------------------------------------------------------------------------------
# SessionManager with the XMPP hooks
# --------------------------------------------------------------------------------------------------

class PeerSessionManager(omemo.SessionManager):
    # Set before create() is called (create() already calls the hooks).
    peer: "Peer"

    @classmethod
    def _peer(cls) -> "Peer":
        return cls.peer

    @staticmethod
    async def _upload_bundle(bundle: omemo.Bundle) -> Any:
        peer = PeerSessionManager._peer()
        if not isinstance(bundle, oldmemo.oldmemo.BundleImpl):
            raise omemo.UnknownNamespace(f"unknown bundle type {type(bundle)}")
        try:
            await peer.pep.publish(
                f"{BUNDLE_NODE}{bundle.device_id}", "current", oldmemo.etree.serialize_bundle(bundle)
            )
        except (IqError, IqTimeout) as e:
            raise omemo.BundleUploadFailed(f"bundle upload failed: {e}") from e

    @staticmethod
    async def _download_bundle(namespace: str, bare_jid: str, device_id: int) -> omemo.Bundle:
        if namespace != NS:
            raise omemo.UnknownNamespace(namespace)
        peer = PeerSessionManager._peer()
        try:
            elt = await peer.pep.get_item_payload(bare_jid, f"{BUNDLE_NODE}{device_id}")
        except (IqError, IqTimeout) as e:
            raise omemo.BundleDownloadFailed(f"bundle download failed for {bare_jid}/{device_id}: {e}") from e
        if elt is None or elt.tag != f"{{{NS}}}bundle":
            raise omemo.BundleNotFound(f"no bundle for {bare_jid}/{device_id}")
        try:
            return oldmemo.etree.parse_bundle(elt, bare_jid, device_id)
        except Exception as e:  # schema / malformed
            raise omemo.BundleDownloadFailed(f"malformed bundle for {bare_jid}/{device_id}: {e}") from e

    @staticmethod
    async def _delete_bundle(namespace: str, device_id: int) -> Any:
        if namespace != NS:
            raise omemo.UnknownNamespace(namespace)
        peer = PeerSessionManager._peer()
        try:
            await peer.pep.delete_node(f"{BUNDLE_NODE}{device_id}")
        except IqError as e:
            if e.condition != "item-not-found":
                raise omemo.BundleDeletionFailed(str(e)) from e
        except IqTimeout as e:
            raise omemo.BundleDeletionFailed(str(e)) from e

    @staticmethod
    async def _upload_device_list(namespace: str, device_list: Dict[int, Optional[str]]) -> Any:
        if namespace != NS:
            raise omemo.UnknownNamespace(namespace)
        peer = PeerSessionManager._peer()
        try:
            await peer.pep.publish(DEVICELIST_NODE, "current", oldmemo.etree.serialize_device_list(device_list))
        except (IqError, IqTimeout) as e:
            raise omemo.DeviceListUploadFailed(f"device list upload failed: {e}") from e

    @staticmethod
    async def _download_device_list(namespace: str, bare_jid: str) -> Dict[int, Optional[str]]:
        if namespace != NS:
            raise omemo.UnknownNamespace(namespace)
        peer = PeerSessionManager._peer()
        try:
            elt = await peer.pep.get_item_payload(bare_jid, DEVICELIST_NODE)
        except (IqError, IqTimeout) as e:
            raise omemo.DeviceListDownloadFailed(f"device list download failed for {bare_jid}: {e}") from e
        if elt is None or elt.tag != f"{{{NS}}}list":
            return {}
        if elt.find(f"{{{NS}}}device") is None:
            return {}  # empty <list/> (schema wants >= 1 device)
        try:
            return oldmemo.etree.parse_device_list(elt)
        except Exception as e:
            raise omemo.DeviceListDownloadFailed(f"malformed device list of {bare_jid}: {e}") from e

    async def _evaluate_custom_trust_level(self, device: DeviceInformation) -> TrustLevel:
        # Blind trust: everything not explicitly distrusted is trusted.
        if device.trust_level_name == "distrusted":
            return TrustLevel.DISTRUSTED
        return TrustLevel.TRUSTED

    async def _make_trust_decision(self, undecided: FrozenSet[DeviceInformation], identifier: Optional[str]) -> Any:
        for device in undecided:
            await self.set_trust(device.bare_jid, device.identity_key, "blind")

    @staticmethod
    async def _send_message(message: omemo.Message, bare_jid: str) -> Any:
        # Used by python-omemo for empty (handshake completion / heartbeat) messages.
        peer = PeerSessionManager._peer()
        try:
            peer.send_encrypted(bare_jid, oldmemo.etree.serialize_message(message), body=None)
        except Exception as e:
            raise omemo.MessageSendingFailed(str(e)) from e


# --------------------------------------------------------------------------------------------------
# The peer
# --------------------------------------------------------------------------------------------------

def _fix_prekey_attrs(encrypted: ET.Element) -> None:
    """oldmemo treats any present prekey attribute as true; normalise prekey='false'/'0' away."""
    for key in encrypted.iter(f"{{{NS}}}key"):
        v = key.get("prekey")
        if v is not None and v.strip().lower() not in ("true", "1"):
            del key.attrib["prekey"]


class Peer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.xmpp = ClientXMPP(args.jid, args.password)
        self.xmpp.register_plugin("xep_0030")
        self.pep = Pep(self.xmpp)
        self.storage = DictStorage(args.state)
        self.backend = oldmemo.Oldmemo(self.storage)
        self.sm: Optional[PeerSessionManager] = None
        self.own_jid = self.xmpp.boundjid.bare
        self.lock = asyncio.Lock()
        self.session_started = asyncio.Event()
        self.omemo_ready = asyncio.Event()  # offline messages may arrive before the SessionManager exists
        self.failed: Optional[str] = None
        self.queue: "asyncio.Queue[Optional[str]]" = asyncio.Queue()

        if args.ca:
            self.xmpp.ca_certs = Path(args.ca)
        else:
            if not _is_loopback(args.host):
                raise SystemExit("refusing to disable TLS verification for non-loopback host; pass --ca")
            self.xmpp.ssl_context.check_hostname = False
            self.xmpp.ssl_context.verify_mode = __import__("ssl").CERT_NONE

        self.xmpp.add_event_handler("session_start", self._on_session_start)
        self.xmpp.add_event_handler("failed_auth", self._on_failed_auth)
        self.xmpp.add_event_handler("connection_failed", self._on_connection_failed)
        # Not the "message" event: slixmpp only fires that for stanzas with a <body>, and key-transport /
        # handshake-completion messages have none.
        self.xmpp.register_handler(CoroutineCallback(
            "OMEMO message",
            MatchXPath(f"{{{self.xmpp.default_ns}}}message/{{{NS}}}encrypted"),
            self._on_message,
        ))

    # ---- xmpp events ----
    async def _on_session_start(self, _event: Any) -> None:
        self.xmpp.send_presence()
        self.session_started.set()

    def _on_failed_auth(self, _event: Any) -> None:
        self.failed = "authentication failed"
        self.session_started.set()

    def _on_connection_failed(self, event: Any) -> None:
        self.failed = f"connection failed: {event}"
        self.session_started.set()

    async def _on_message(self, msg: Any) -> None:
        if msg["type"] == "error":
            return
        encrypted = msg.xml.find(f"{{{NS}}}encrypted")
        if encrypted is None:
            return
        sender = msg["from"].bare
        await self.omemo_ready.wait()
        try:
            result = await self.decrypt(sender, encrypted)
        except Exception as e:  # noqa: BLE001
            log.exception("decryption failed")
            emit("error", message=f"decryption of message from {sender} failed: {type(e).__name__}: {e}",
                 stanza_id=msg["id"])
            return
        plaintext, device, key, iv = result
        if plaintext is None:
            emit("key_transport", **{"from": sender}, key=b64(key), iv=b64(iv), sender_device=device.device_id)
        else:
            emit("message", **{"from": sender}, body=plaintext.decode("utf-8", errors="replace"),
                 sender_device=device.device_id, id=msg["id"])

    # ---- OMEMO operations ----
    async def decrypt(self, sender: str, encrypted: ET.Element):
        assert self.sm is not None
        _fix_prekey_attrs(encrypted)
        async with self.lock:
            message = await oldmemo.etree.parse_message(encrypted, sender, self.own_jid, self.sm)
            plaintext, device, pkm = await self.sm.decrypt(message)
        # oldmemo.etree.parse_message drops the <iv> of payload-less (key transport) messages, so read it
        # from the XML ourselves.
        iv_elt = encrypted.find(f"{{{NS}}}header/{{{NS}}}iv")
        iv = base64.b64decode(iv_elt.text or "") if iv_elt is not None else message.content.initialization_vector
        return plaintext, device, pkm.key, iv

    def send_encrypted(self, to: str, encrypted: ET.Element, body: Optional[str]) -> str:
        msg = self.xmpp.make_message(mto=to, mtype="chat")
        if body is not None:
            msg["body"] = body
        msg.append(encrypted)
        msg.append(ET.Element("{urn:xmpp:hints}store"))
        if body is not None:
            msg.append(ET.Element("{urn:xmpp:eme:0}encryption", {"namespace": NS, "name": "OMEMO"}))
        msg_id = self.xmpp.new_id()
        msg["id"] = msg_id
        msg.send()
        return msg_id

    async def encrypt_custom(self, bare_jid: str, device_id: Optional[int], plaintext: Optional[bytes]):
        """Encrypt for all active devices of bare_jid (device_id None) or for exactly one device.
        plaintext None -> key transport (empty content, the ratchet carries the bare 16-byte key)."""
        assert self.sm is not None
        try:
            await self.sm.refresh_device_list(NS, bare_jid)
        except omemo.DeviceListDownloadFailed as e:
            log.warning("device list refresh failed: %s", e)
        devices = await self.sm.get_device_information(bare_jid)
        targets = [
            d.device_id for d in devices
            if dict(d.active).get(NS, False) and not (bare_jid == self.own_jid and d.device_id == self.device_id)
        ]
        if device_id is not None:
            targets = [device_id]  # exactly this device, even if it is not in the published list
        if not targets:
            raise RuntimeError(f"no OMEMO devices for {bare_jid}")

        if plaintext is None:
            content, pkm = await self.backend.encrypt_empty()
        else:
            content, pkm = await self.backend.encrypt_plaintext(plaintext)

        keys = set()
        sessions = []
        for did in targets:
            session = await self.backend.load_session(bare_jid, did)
            if session is None:
                bundle = await PeerSessionManager._download_bundle(NS, bare_jid, did)
                session, ekm = await self.backend.build_session_active(bare_jid, did, bundle, pkm)
            else:
                ekm = await self.backend.encrypt_key_material(session, pkm)
            kex = session.key_exchange if (session.initiation is Initiation.ACTIVE and not session.confirmed) else None
            keys.add((ekm, kex))
            sessions.append(session)
        for session in sessions:
            await self.backend.store_session(session)
        message = omemo.Message(NS, self.own_jid, self.device_id, content, frozenset(keys))
        return message, pkm, content, targets

    async def cmd_send(self, to: str, body: str) -> None:
        assert self.sm is not None
        async with self.lock:
            try:
                await self.sm.refresh_device_list(NS, to)
            except omemo.DeviceListDownloadFailed as e:
                log.warning("device list refresh failed: %s", e)
            messages, errors = await self.sm.encrypt(frozenset({to}), {NS: body.encode("utf-8")})
            for err in errors:
                log.warning("non-critical encryption error: %s", err)
            message = next(m for m in messages if m.namespace == NS)
            msg_id = self.send_encrypted(to, oldmemo.etree.serialize_message(message), FALLBACK_BODY)
        emit("sent", to=to, id=msg_id, devices=sorted(k[0].device_id for k in message.keys))

    async def cmd_key_transport(self, to: str) -> None:
        async with self.lock:
            message, pkm, content, targets = await self.encrypt_custom(to, None, None)
            self.send_encrypted(to, oldmemo.etree.serialize_message(message), body=None)
        emit("key_transport_sent", to=to, key=b64(pkm.key), iv=b64(content.initialization_vector),
             devices=sorted(targets))

    async def cmd_encrypt_element(self, to: str, device: int, plaintext: str) -> None:
        async with self.lock:
            message, _pkm, _content, _targets = await self.encrypt_custom(to, int(device), plaintext.encode("utf-8"))
        emit("encrypted_element", to=to, device=int(device),
             xml=tostring(oldmemo.etree.serialize_message(message)))

    async def cmd_decrypt_element(self, sender: str, xml: str) -> None:
        elt = ET.fromstring(xml)
        if elt.tag != f"{{{NS}}}encrypted":
            found = elt.find(f".//{{{NS}}}encrypted")
            if found is None:
                raise ValueError(f"no <encrypted xmlns='{NS}'> in given xml")
            elt = found
        plaintext, device, key, iv = await self.decrypt(sender, elt)
        emit("decrypted", **{"from": sender},
             plaintext=None if plaintext is None else plaintext.decode("utf-8", errors="replace"),
             sender_device=device.device_id, key=b64(key), iv=b64(iv))

    async def cmd_devices(self, jid: str) -> None:
        devices = await PeerSessionManager._download_device_list(NS, jid)
        emit("devices", jid=jid, devices=sorted(devices))

    async def extra_command(self, name: str, cmd: Dict[str, Any]) -> bool:
        """Hook for peers built on this one (jet_peer.py): handle one more command; False == unknown."""
        return False

    # ---- main ----
    async def run(self) -> int:
        self.xmpp.connect((self.args.host, self.args.port), force_starttls=True)
        try:
            await asyncio.wait_for(self.session_started.wait(), timeout=self.args.timeout)
        except asyncio.TimeoutError:
            self.failed = "timed out waiting for XMPP session"
        if self.failed:
            emit("error", message=self.failed)
            return 1

        PeerSessionManager.peer = self
        try:
            self.sm = await PeerSessionManager.create(
                [self.backend], self.storage, self.own_jid, None, "undecided",
            )
            await self.sm.after_history_sync()
            own, _others = await self.sm.get_own_device_information()
        except Exception as e:  # noqa: BLE001
            log.exception("OMEMO setup failed")
            emit("error", message=f"OMEMO setup failed: {type(e).__name__}: {e}")
            return 1
        self.device_id = own.device_id
        self.omemo_ready.set()
        curve = xeddsa.ed25519_pub_to_curve25519_pub(own.identity_key)
        emit("ready", jid=self.own_jid, device_id=own.device_id, fingerprint=curve.hex(),
             identity_key=b64(b"\x05" + curve))

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
                name = cmd.get("cmd")
            except Exception as e:  # noqa: BLE001
                emit("error", message=f"bad command line: {e}")
                continue
            if name == "quit":
                break
            try:
                if name == "send":
                    await self.cmd_send(cmd["to"], cmd["body"])
                elif name == "key_transport":
                    await self.cmd_key_transport(cmd["to"])
                elif name == "encrypt_element":
                    await self.cmd_encrypt_element(cmd["to"], cmd["device"], cmd["plaintext"])
                elif name == "decrypt_element":
                    await self.cmd_decrypt_element(cmd["from"], cmd["xml"])
                elif name == "devices":
                    await self.cmd_devices(cmd["jid"])
                elif name == "ping":
                    emit("pong")
                elif not await self.extra_command(name, cmd):
                    emit("error", message=f"unknown command {name!r}", cmd=name)
            except Exception as e:  # noqa: BLE001
                log.exception("command %s failed", name)
                emit("error", message=f"{type(e).__name__}: {e}", cmd=name)

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


def arg_parser(description: str) -> argparse.ArgumentParser:
    """The connection/state flags every peer built on this module takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--jid", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5222)
    parser.add_argument("--ca", help="PEM file to trust as CA (e.g. Prosody's self-signed cert)")
    parser.add_argument("--state", help="JSON file to persist OMEMO state in (default: memory only)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the XMPP session")
    parser.add_argument("--debug", action="store_true", help="verbose logging on stderr")
    return parser


def run_peer(make_peer: Any, args: argparse.Namespace) -> None:
    """Runs `make_peer(args)` until quit/EOF and exits the process with its status."""
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        peer = make_peer(args)
        rc = loop.run_until_complete(peer.run())
    except KeyboardInterrupt:
        rc = 130
    except BaseException as e:  # noqa: BLE001
        emit("error", message=f"fatal: {type(e).__name__}: {e}")
        rc = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)  # don't hang on the stdin reader thread or lingering tasks


def main() -> None:
    run_peer(Peer, arg_parser(__doc__.split("\n")[0]).parse_args())


if __name__ == "__main__":
    main()
