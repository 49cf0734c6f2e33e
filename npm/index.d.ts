export * from "./chunkwise.js";
export { default } from "./chunkwise.js";

import type { Upload, UploadError, UploadOptions, UploadProgress, UploadResult } from "./chunkwise.js";

/** Options of `new UploadQueue(options)`: a single Upload's options, applied to every file. */
export interface UploadQueueOptions
  extends Omit<UploadOptions, "maxInFlight" | "metadata" | "onProgress" | "onSlice" | "signal" | "resumeFrom" | "size"> {
  /** Slice requests in flight across all files. Default 6; 1 ..= 64. Each file sends at most
   * min(4, maxInFlight) at once. */
  maxInFlight?: number;
  /** Files running at once (creating, sending, completing). Default maxInFlight + 2; 1 ..= 1000. */
  maxActiveFiles?: number;
  /** Metadata sent with each file: an object added to the default `{ name, path, type }`, or
   * a function returning the whole metadata of one file. */
  metadata?: Record<string, string> | ((file: Blob, path: string) => Record<string, string>);
  /** Totals over the queue, at most every 50 ms while anything changes. */
  onProgress?: (progress: QueueProgress) => void;
  /** A file changed state or made progress. */
  onFileChange?: (item: QueueItem) => void;
}

/** Totals over every file that was not cancelled. */
export interface QueueProgress {
  files: number;
  filesDone: number;
  filesFailed: number;
  filesCancelled: number;
  bytesTotal: number;
  bytesSent: number;
  bytesAcknowledged: number;
  /** Slice requests in flight now, across all files. */
  inFlight: number;
  bytesPerSecond: number;
  etaSeconds: number | null;
}

/** A file found in a dropped folder, with its path there (`photos/2024/a.jpg`). */
export interface FileWithPath {
  file: Blob;
  path: string;
}

export type QueueItemState = "queued" | "uploading" | "done" | "failed" | "cancelled";

/** One file of an `UploadQueue`. */
export interface QueueItem {
  /** Position in the queue, from 0. */
  readonly id: number;
  readonly file: Blob;
  /** The path inside a dropped folder (`photos/2024/a.jpg`), else the file's name. */
  readonly path: string;
  readonly size: number;
  readonly state: QueueItemState;
  readonly progress: UploadProgress;
  /** Set when `state` is "done". */
  readonly result: UploadResult | null;
  /** Set when `state` is "failed" (or "cancelled" once it had started). */
  readonly error: UploadError | null;
  /** The upload's URL on the server, once created. */
  readonly location: string | null;
  /** The running Upload, while `state` is "uploading". */
  readonly upload: Upload | null;
  /** Cancels this file: a queued file never starts, a running one is aborted and deleted. */
  cancel(): void;
}

/**
 * Uploads many files with one limit of slice requests in flight across all of them. Files
 * start in the order added, at most `maxActiveFiles` at once; slots go to the file that
 * has waited longest, so small files are not starved behind a big one. One file's failure
 * does not stop the others.
 */
export class UploadQueue {
  /** Checks every option now; throws `TypeError` or `RangeError` if one is wrong. */
  constructor(options: UploadQueueOptions);
  /** Adds files and starts them in turn. Throws a TypeError naming the first item that is
   * not a File or Blob, and then adds none. */
  add(files: Blob | FileList | Iterable<Blob | FileWithPath>): QueueItem[];
  /** Adds what was dropped, folders walked to every file inside. An empty folder adds nothing. */
  addDropped(dataTransfer: DataTransfer): Promise<QueueItem[]>;
  /** Every file in what was dropped, folders walked. Call it in the drop handler itself. */
  static filesIn(dataTransfer: DataTransfer): Promise<FileWithPath[]>;
  readonly items: QueueItem[];
  readonly progress: QueueProgress;
  readonly paused: boolean;
  /** Stops starting requests in every file; requests in flight finish. */
  pause(): void;
  /** Starts requests again, and queued files. */
  resume(): void;
  /** Cancels every file not finished yet. */
  cancel(): void;
  /** Resolves with every item once none is queued or uploading; never rejects. */
  done(): Promise<QueueItem[]>;
}
