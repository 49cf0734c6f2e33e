//! Slice sources over a `Blob` and over any `ReadableStream`.
//!
//! A Blob slice travels as the `blob.slice()` itself: fetch streams it from disk in the
//! network stack, so its bytes never enter JS or wasm memory. It is read through
//! `blob.slice(start, end).stream()` only when a digest needs to see the bytes, which also
//! avoids Safari's failure on `stream()` of files over 4 GiB, and a retry simply sends the
//! same Blob slice again.
//!
//! A generic `ReadableStream` can be read only once, so it is re-chunked into exact slices
//! in a small pool of reused `Uint8Array`s (never in wasm memory), each held until the
//! server acknowledged its slice. The browser's own chunk sizes vary (64 KiB to 2 MiB in
//! Chromium) and are never assumed.

use std::rc::Rc;

use chunkwise_core::engine::{Read, SliceData, SliceSource, SourceError};
use js_sys::{ArrayBuffer, Reflect, Uint8Array};
use sha2::{Digest, Sha256};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Blob, ReadableStream, ReadableStreamByobReader, ReadableStreamDefaultReader};

use crate::digest::SliceHasher;
use crate::interop::describe_js_error;

/// A slice body: a Blob slice or a view of a pooled buffer.
///
/// The lease keeps a pooled buffer from being reused while any copy of the body exists.
#[derive(Clone, Debug)]
pub struct Body {
    /// What `fetch` sends.
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

/// Reads `blob` into the start of `buffer` (at most `len` bytes), handing each piece to
/// `each` as it lands so that hashing overlaps the browser's reading of the next piece.
///
/// A BYOB reader fills the one reused buffer, so reading a slice allocates nothing: with
/// the default reader, Chromium hands out a fresh ArrayBuffer per chunk, and the renderer
/// grew by about 96 MiB on a 256 MiB upload waiting for the collector (bench, 2026-11-21).
/// A BYOB read transfers the buffer, so the one handed back is a new object over the same
/// memory. Without BYOB support, the default reader's chunks are copied in instead.
async fn read_slice(
    blob: &Blob,
    buffer: ArrayBuffer,
    len: u32,
    mut each: impl FnMut(&Uint8Array),
) -> Result<(ArrayBuffer, u32), SourceError> {
    let read_error = |e: JsValue| SourceError::Read(describe_js_error(&e));
    let stream = blob.stream();
    let Ok(reader) = ReadableStreamByobReader::new(&stream) else {
        let target = Uint8Array::new(&buffer);
        let mut reader = StreamReader::new(&stream).map_err(read_error)?;
        let mut filled = 0u32;
        while let Some(chunk) = reader.next_chunk().await? {
            if chunk.length() > len - filled {
                return Err(SourceError::Read(
                    "a slice gave more bytes than its length".into(),
                ));
            }
            target.set(&chunk, filled);
            each(&chunk);
            filled += chunk.length();
        }
        return Ok((buffer, filled));
    };
    let mut buffer = buffer;
    let mut filled = 0u32;
    let result = async {
        while filled < len {
            let view = Uint8Array::new_with_byte_offset_and_length(&buffer, filled, len - filled);
            let result = JsFuture::from(reader.read_with_array_buffer_view(&view))
                .await
                .map_err(read_error)?;
            let value = Reflect::get(&result, &"value".into())
                .ok()
                .and_then(|v| v.dyn_into::<Uint8Array>().ok());
            let Some(value) = value else {
                return Err(SourceError::Read("a BYOB read gave no view back".into()));
            };
            buffer = value.buffer();
            if Reflect::get(&result, &"done".into())
                .map(|d| d.is_truthy())
                .unwrap_or(true)
            {
                break;
            }
            each(&value);
            filled += value.byte_length();
        }
        Ok(())
    }
    .await;
    if filled >= len {
        // Every byte is in; nobody reads the (empty) rest.
        let _ = reader.cancel();
    }
    reader.release_lock();
    result.map(|()| (buffer, filled))
}

fn changed(index: u64, read: u64, len: u64) -> SourceError {
    SourceError::Read(format!(
        "slice {index} gave {read} bytes instead of {len}; was the file changed while uploading?"
    ))
}

fn file_hasher(digest: bool) -> Option<Sha256> {
    digest.then(Sha256::new)
}

/// Slices of a Blob or File.
pub struct BlobSource {
    blob: Blob,
    size_bytes: u64,
    chunk_size_bytes: u64,
    next_index: u64,
    file_hash: Option<Sha256>,
    /// One slice's worth of bytes, reused for every slice read for its digest.
    buffer: Option<ArrayBuffer>,
}

impl BlobSource {
    /// Slices `blob` into `chunk_size_bytes`, hashing when `digest` is set.
    pub fn new(blob: Blob, chunk_size_bytes: u64, digest: bool) -> Self {
        let size_bytes = blob.size() as u64;
        Self {
            blob,
            size_bytes,
            chunk_size_bytes,
            next_index: 0,
            file_hash: file_hasher(digest),
            buffer: None,
        }
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
        self.buffer = None;
    }

    async fn next(&mut self) -> Result<Read<Body>, SourceError> {
        let start = self.next_index * self.chunk_size_bytes;
        if start >= self.size_bytes {
            return Ok(Read::End {
                size_bytes: self.size_bytes,
                sha256: self.file_hash.take().map(|h| h.finalize().into()),
            });
        }
        let end = (start + self.chunk_size_bytes).min(self.size_bytes);
        let slice = self
            .blob
            .slice_with_f64_and_f64(start as f64, end as f64)
            .map_err(|e| SourceError::Read(describe_js_error(&e)))?;
        let sha256 = match self.file_hash.as_mut() {
            Some(file_hash) => {
                let len = (end - start) as u32;
                let buffer = self
                    .buffer
                    .take()
                    .unwrap_or_else(|| ArrayBuffer::new(self.chunk_size_bytes as u32));
                let mut hasher = SliceHasher::new();
                let (buffer, read) =
                    read_slice(&slice, buffer, len, |chunk| hasher.update(file_hash, chunk))
                        .await?;
                if read != len {
                    return Err(changed(self.next_index, read.into(), len.into()));
                }
                let sha256 = hasher
                    .finish(&Uint8Array::new_with_byte_offset_and_length(
                        &buffer, 0, len,
                    ))
                    .await?;
                self.buffer = Some(buffer);
                Some(sha256)
            }
            None => None,
        };
        let index = self.next_index;
        self.next_index += 1;
        Ok(Read::Slice(SliceData {
            index,
            len: end - start,
            body: Body {
                value: slice.into(),
                _lease: None,
            },
            sha256,
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
    file_hash: Option<Sha256>,
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
            file_hash: file_hasher(digest),
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
        let mut hasher = self.file_hash.is_some().then(SliceHasher::new);
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
            if let (Some(hasher), Some(file_hash)) = (hasher.as_mut(), self.file_hash.as_mut()) {
                hasher.update(file_hash, &part);
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
                sha256: self.file_hash.take().map(|h| h.finalize().into()),
            });
        };
        let value = if filled == capacity {
            buffer
        } else {
            buffer.subarray(0, filled)
        };
        let sha256 = match hasher {
            Some(hasher) => Some(hasher.finish(&value).await?),
            None => None,
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
