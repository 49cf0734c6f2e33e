//! Slice sources over a `Blob` and over any `ReadableStream`.
//!
//! A Blob slice travels as the `blob.slice()` itself: the browser streams it from disk in the
//! network stack, so its bytes never enter JS or wasm memory. It is read through
//! `blob.slice(start, end).stream()` only when a digest needs to see the bytes, which also
//! avoids Safari's failure on `stream()` of files over 4 GiB, and a retry simply sends the
//! same Blob slice again.
//!
//! A generic `ReadableStream` can be read only once, so it is re-chunked into exact slices
//! in a small pool of reused `Uint8Array`s (never in wasm memory), each held until the
//! server acknowledged its slice. The browser's own chunk sizes vary (64 KiB to 2 MiB in
//! Chromium) and are never assumed.

use std::collections::VecDeque;
use std::rc::Rc;

use chunkwise_core::engine::{Read, SliceData, SliceSource, SourceError};
use js_sys::{ArrayBuffer, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Blob, ReadableStream, ReadableStreamDefaultReader};

use crate::digest::{slice_sha256, wasm_sha256, webcrypto_digest};
use crate::interop::describe_js_error;

/// A slice body: a Blob slice or a view of a pooled buffer.
///
/// The lease keeps a pooled buffer from being reused while any copy of the body exists.
#[derive(Clone, Debug)]
pub struct Body {
    /// What the request sends (XHR, or fetch where there is no XHR).
    pub value: JsValue,
    _lease: Option<Rc<()>>,
}

/// Reads a stream to its end chunk by chunk, releasing the lock when dropped.
pub struct StreamReader {
    reader: ReadableStreamDefaultReader,
    done: bool,
}

impl StreamReader {
    /// Locks `stream` for reading.
    pub fn new(stream: &ReadableStream) -> Result<Self, JsValue> {
        let reader = stream
            .get_reader()
            .dyn_into::<ReadableStreamDefaultReader>()?;
        Ok(Self {
            reader,
            done: false,
        })
    }

    /// The next chunk, or `None` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Uint8Array>, SourceError> {
        if self.done {
            return Ok(None);
        }
        let result = JsFuture::from(self.reader.read())
            .await
            .map_err(|e| SourceError::Read(describe_js_error(&e)))?;
        let done = Reflect::get(&result, &"done".into())
            .map(|d| d.is_truthy())
            .unwrap_or(true);
        if done {
            self.done = true;
            return Ok(None);
        }
        let value = Reflect::get(&result, &"value".into()).unwrap_or(JsValue::UNDEFINED);
        value.dyn_into::<Uint8Array>().map(Some).map_err(|_| {
            SourceError::Read("the stream gave a chunk that is not a Uint8Array".into())
        })
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        if !self.done {
            // Stop the underlying source too: nobody will read the rest.
            let _ = self.reader.cancel();
        }
        self.reader.release_lock();
    }
}

#[wasm_bindgen(module = "/src/js/browser.js")]
extern "C" {
    /// Reads a Blob slice into a reused buffer, resolving with `{buffer, length, digest}`.
    #[wasm_bindgen(js_name = readSlice)]
    fn read_slice(blob: &Blob, buffer: &ArrayBuffer) -> Promise;
}

/// Slices read ahead for their digests, at most. A read overlaps the sending of earlier
/// slices and the hashing of the one before it (WebCrypto copies its input when called, so
/// the buffer is free at once). Two reads at once were a little faster still, but twice a
/// read of Chromium's blob stream never settled with two slices of one File read at once
/// (32 MiB slices; bench, 2026-11-21), so one it is.
const READ_AHEAD: usize = 1;

fn changed(index: u64, read: u64, len: u64) -> SourceError {
    SourceError::Read(format!(
        "slice {index} gave {read} bytes instead of {len}; was the file changed while uploading?"
    ))
}

/// A slice being read for its digest.
struct PendingRead {
    index: u64,
    len: u64,
    slice: Blob,
    read: JsFuture,
}

/// Slices of a Blob or File.
pub struct BlobSource {
    blob: Blob,
    size_bytes: u64,
    chunk_size_bytes: u64,
    next_index: u64,
    digest: bool,
    /// Reads started ahead, in order.
    pending: VecDeque<PendingRead>,
    /// Slice-sized buffers no read is using.
    free: Vec<ArrayBuffer>,
}

impl BlobSource {
    /// Slices `blob` into `chunk_size_bytes`, hashing each slice when `digest` is set.
    pub fn new(blob: Blob, chunk_size_bytes: u64, digest: bool) -> Self {
        let size_bytes = blob.size() as u64;
        Self {
            blob,
            size_bytes,
            chunk_size_bytes,
            next_index: 0,
            digest,
            pending: VecDeque::new(),
            free: Vec::new(),
        }
    }

    /// Slice `index` as a Blob and its length, or `None` past the end.
    fn slice(&self, index: u64) -> Result<Option<(Blob, u64)>, SourceError> {
        let start = index * self.chunk_size_bytes;
        if start >= self.size_bytes {
            return Ok(None);
        }
        let end = (start + self.chunk_size_bytes).min(self.size_bytes);
        let slice = self
            .blob
            .slice_with_f64_and_f64(start as f64, end as f64)
            .map_err(|e| SourceError::Read(describe_js_error(&e)))?;
        Ok(Some((slice, end - start)))
    }

    /// Starts reading slices until [`READ_AHEAD`] are under way or the end is reached.
    fn read_ahead(&mut self) -> Result<(), SourceError> {
        while self.pending.len() < READ_AHEAD {
            let Some((slice, len)) = self.slice(self.next_index)? else {
                break;
            };
            let buffer = self
                .free
                .pop()
                .unwrap_or_else(|| ArrayBuffer::new(self.chunk_size_bytes as u32));
            let read = JsFuture::from(read_slice(&slice, &buffer));
            self.pending.push_back(PendingRead {
                index: self.next_index,
                len,
                slice,
                read,
            });
            self.next_index += 1;
        }
        Ok(())
    }
}

impl SliceSource for BlobSource {
    type Body = Body;

    fn size_bytes(&self) -> Option<u64> {
        Some(self.size_bytes)
    }

    fn chunk_size_bytes(&self) -> u64 {
        self.chunk_size_bytes
    }

    fn set_chunk_size(&mut self, chunk_size_bytes: u64) {
        self.chunk_size_bytes = chunk_size_bytes;
        self.pending.clear();
        self.free.clear();
    }

    async fn next(&mut self) -> Result<Read<Body>, SourceError> {
        let read_error = |e: JsValue| SourceError::Read(describe_js_error(&e));
        if !self.digest {
            let Some((slice, len)) = self.slice(self.next_index)? else {
                return Ok(Read::End {
                    size_bytes: self.size_bytes,
                });
            };
            let index = self.next_index;
            self.next_index += 1;
            return Ok(Read::Slice(SliceData {
                index,
                len,
                body: Body {
                    value: slice.into(),
                    _lease: None,
                },
                sha256: None,
            }));
        }
        self.read_ahead()?;
        let Some(pending) = self.pending.pop_front() else {
            return Ok(Read::End {
                size_bytes: self.size_bytes,
            });
        };
        let result = pending.read.await.map_err(read_error)?;
        let prop = |name: &str| Reflect::get(&result, &name.into()).unwrap_or(JsValue::UNDEFINED);
        let buffer: ArrayBuffer = prop("buffer")
            .dyn_into()
            .map_err(|_| SourceError::Read("reading a slice gave no buffer back".into()))?;
        let read = prop("length").as_f64().unwrap_or(0.0) as u64;
        if read != pending.len {
            return Err(changed(pending.index, read, pending.len));
        }
        // Null where there is no WebCrypto: then the slice is hashed in wasm, before the
        // buffer is reused.
        let digest = prop("digest");
        let in_wasm = digest.is_null().then(|| {
            wasm_sha256(&Uint8Array::new_with_byte_offset_and_length(
                &buffer,
                0,
                pending.len as u32,
            ))
        });
        // WebCrypto took its own copy: read the next slice while this one is hashed.
        self.free.push(buffer);
        self.read_ahead()?;
        let sha256 = match in_wasm {
            Some(sha256) => sha256,
            None => webcrypto_digest(
                &JsFuture::from(Promise::from(digest))
                    .await
                    .map_err(read_error)?,
            ),
        };
        Ok(Read::Slice(SliceData {
            index: pending.index,
            len: pending.len,
            body: Body {
                value: pending.slice.into(),
                _lease: None,
            },
            sha256: Some(sha256),
        }))
    }
}

/// Exact slices re-chunked from a `ReadableStream<Uint8Array>`.
pub struct StreamSource {
    reader: StreamReader,
    expected_size_bytes: Option<u64>,
    chunk_size_bytes: u64,
    next_index: u64,
    read_bytes: u64,
    /// The unread tail of the last chunk the stream gave.
    leftover: Option<(Uint8Array, u32)>,
    pool: Vec<(Uint8Array, Rc<()>)>,
    digest: bool,
}

impl StreamSource {
    /// Reads `stream` (already checked to be unlocked) into slices of `chunk_size_bytes`.
    pub fn new(
        stream: &ReadableStream,
        expected_size_bytes: Option<u64>,
        chunk_size_bytes: u64,
        digest: bool,
    ) -> Result<Self, JsValue> {
        Ok(Self {
            reader: StreamReader::new(stream)?,
            expected_size_bytes,
            chunk_size_bytes,
            next_index: 0,
            read_bytes: 0,
            leftover: None,
            pool: Vec::new(),
            digest,
        })
    }

    /// A buffer no live slice body refers to, or a new one.
    fn free_buffer(&mut self) -> (Uint8Array, Rc<()>) {
        if let Some((buffer, lease)) = self
            .pool
            .iter()
            .find(|(_, lease)| Rc::strong_count(lease) == 1)
        {
            return (buffer.clone(), lease.clone());
        }
        let entry = (
            Uint8Array::new_with_length(self.chunk_size_bytes as u32),
            Rc::new(()),
        );
        self.pool.push(entry.clone());
        entry
    }

    fn check_not_longer(&self) -> Result<(), SourceError> {
        match self.expected_size_bytes {
            Some(expected) if self.read_bytes > expected => Err(SourceError::SizeMismatch {
                expected,
                actual: self.read_bytes,
            }),
            _ => Ok(()),
        }
    }
}

impl SliceSource for StreamSource {
    type Body = Body;

    fn size_bytes(&self) -> Option<u64> {
        self.expected_size_bytes
    }

    fn chunk_size_bytes(&self) -> u64 {
        self.chunk_size_bytes
    }

    fn set_chunk_size(&mut self, chunk_size_bytes: u64) {
        self.chunk_size_bytes = chunk_size_bytes;
        self.pool.clear();
    }

    async fn next(&mut self) -> Result<Read<Body>, SourceError> {
        let capacity = self.chunk_size_bytes as u32;
        // Taken only once there are bytes, so the end of the stream costs no buffer.
        let mut target: Option<(Uint8Array, Rc<()>)> = None;
        let mut filled = 0u32;
        while filled < capacity {
            let (chunk, offset) = match self.leftover.take() {
                Some(rest) => rest,
                None => match self.reader.next_chunk().await? {
                    Some(chunk) => (chunk, 0),
                    None => {
                        if let Some(expected) =
                            self.expected_size_bytes.filter(|&e| e != self.read_bytes)
                        {
                            return Err(SourceError::SizeMismatch {
                                expected,
                                actual: self.read_bytes,
                            });
                        }
                        break;
                    }
                },
            };
            let available = chunk.length() - offset;
            if available == 0 {
                continue;
            }
            if target.is_none() {
                target = Some(self.free_buffer());
            }
            let n = available.min(capacity - filled);
            let part = chunk.subarray(offset, offset + n);
            if let Some((buffer, _)) = &target {
                buffer.set(&part, filled);
            }
            filled += n;
            self.read_bytes += u64::from(n);
            self.check_not_longer()?;
            if n < available {
                self.leftover = Some((chunk, offset + n));
            }
        }
        let Some((buffer, lease)) = target else {
            return Ok(Read::End {
                size_bytes: self.read_bytes,
            });
        };
        let value = if filled == capacity {
            buffer
        } else {
            buffer.subarray(0, filled)
        };
        let sha256 = match self.digest {
            true => Some(slice_sha256(&value).await?),
            false => None,
        };
        let index = self.next_index;
        self.next_index += 1;
        Ok(Read::Slice(SliceData {
            index,
            len: u64::from(filled),
            body: Body {
                value: value.into(),
                _lease: Some(lease),
            },
            sha256,
        }))
    }
}

/// Either source, chosen at run time.
pub enum Source {
    /// A Blob or File.
    Blob(BlobSource),
    /// A ReadableStream.
    Stream(StreamSource),
}

impl SliceSource for Source {
    type Body = Body;

    fn size_bytes(&self) -> Option<u64> {
        match self {
            Source::Blob(s) => s.size_bytes(),
            Source::Stream(s) => s.size_bytes(),
        }
    }

    fn chunk_size_bytes(&self) -> u64 {
        match self {
            Source::Blob(s) => s.chunk_size_bytes(),
            Source::Stream(s) => s.chunk_size_bytes(),
        }
    }

    fn set_chunk_size(&mut self, chunk_size_bytes: u64) {
        match self {
            Source::Blob(s) => s.set_chunk_size(chunk_size_bytes),
            Source::Stream(s) => s.set_chunk_size(chunk_size_bytes),
        }
    }

    async fn next(&mut self) -> Result<Read<Body>, SourceError> {
        match self {
            Source::Blob(s) => s.next().await,
            Source::Stream(s) => s.next().await,
        }
    }
}
