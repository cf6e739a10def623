/**
 * media/: werift adapter, ffmpeg discovery, ffmpeg-backed RTP sources and recorders.
 *
 * @module
 */
export * from "./webrtc.ts";
export { type FfmpegBinary, FfmpegNotFoundError, type FfmpegSource, resolveFfmpeg } from "./ffmpeg.ts";
export {
  isVp8KeyframeStart,
  liveFfmpegPids,
  type MediaSource,
  MediaSourceError,
  sharedSource,
  sharedSourceCount,
  type SharedSourceHandle,
  type SourceExit,
  sourceKey,
  type SourceOptions,
  type SourceSpec,
  startSource,
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
