/**
 * Byte-stream transports for Jingle file transfer: XEP-0047 In-Band Bytestreams (XEP-0261) and
 * XEP-0065 SOCKS5 Bytestreams, direct and through the server's proxy (XEP-0260).
 *
 * @module
 */
export {
  buildIbbClose,
  buildIbbData,
  buildIbbOpen,
  IBB_MAX_BLOCK_SIZE,
  type IbbElement,
  IbbError,
  IbbParseError,
  ibbReceive,
  type IbbReceiveOptions,
  type IbbReception,
  ibbSend,
  type IbbSendOptions,
  NS_IBB,
  parseIbb,
} from "./ibb.ts";
export {
  activateProxy,
  classifyAddress,
  connectAnyS5b,
  type ConnectAnyS5bOptions,
  connectS5b,
  type ConnectS5bOptions,
  discoverProxy,
  listenS5b,
  type ListenS5bOptions,
  NS_BYTESTREAMS,
  parseStreamhost,
  queryProxy,
  type S5bConnection,
  s5bDstAddr,
  S5bError,
  type S5bListener,
  type S5bProxy,
} from "./socks5.ts";
