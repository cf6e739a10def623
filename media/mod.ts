/**
 * media/: werift adapter, ffmpeg discovery, ffmpeg-backed RTP sources and recorders.
 *
 * @module
 */
export * from "./webrtc.ts";
export {
  type FfmpegBinary,
  ffmpegCommand,
  FfmpegNotFoundError,
  type FfmpegSource,
  resolveFfmpeg,
} from "./ffmpeg.ts";
export {
  checkMediaFile,
  isVp8KeyframeStart,
  liveFfmpegPids,
  type MediaFileInfo,
  type MediaSource,
  MediaSourceError,
  RtpContinuity,
  sharedSource,
  sharedSourceCount,
  type SharedSourceHandle,
  type SharedSourceOptions,
  type SourceExit,
  sourceKey,
  type SourceOptions,
  type SourceSpec,
  startSource,
  stopIdleSources,
} from "./sources.ts";
export {
  JitterBuffer,
  type Recorder,
  type RecorderCodec,
  RecorderError,
  type RecorderOptions,
  type RecordingResult,
  startRecorder,
} from "./recorder.ts";
export {
  chosenPayloadType,
  type CodecInfo,
  codecLabel,
  type NegotiatedCodec,
  negotiatedCodecs,
  SUPPORTED_CODECS,
  unsupportedCodecs,
} from "./codecs.ts";
