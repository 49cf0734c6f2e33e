//! Every conversion between JS values and Rust: options in, progress, results and
//! errors out. Wrong types become `TypeError`s and out-of-range values `RangeError`s here,
//! at the boundary, and nowhere else.

use std::collections::BTreeMap;

use chunkwise_core::config::{DigestAlgorithm, Options, Valid, MAX_SAFE_SIZE_BYTES};
use chunkwise_core::engine::{Outcome, UploadError};
use chunkwise_core::progress::Progress;
use js_sys::{Array, Function, Object, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{AbortSignal, Blob, ReadableStream, Url};

use crate::s3::{is_s3_location, parse_callbacks};

/// The option names `new Upload()` knows.
const KNOWN_OPTIONS: &[&str] = &[
    "endpoint",
    "chunkSize",
    "maxInFlight",
    "size",
    "metadata",
    "headers",
    "digest",
    "retries",
    "onProgress",
    "onSlice",
    "signal",
    "stallTimeoutMs",
    "offlineTimeoutMs",
    "resume",
    "resumeFrom",
    "s3",
    "protocol",
];

/// What the user gave, before any upload starts.
pub struct Parsed {
    /// Validated numeric options.
    pub options: Valid,
    /// Absolute endpoint URL.
    pub endpoint: String,
    /// Metadata sent on creation.
    pub metadata: BTreeMap<String, String>,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// Progress callback.
    pub on_progress: Option<Function>,
    /// Per-slice state callback.
    pub on_slice: Option<Function>,
    /// Abort signal.
    pub signal: Option<AbortSignal>,
    /// Remember the upload in IndexedDB and resume it when the same file comes back.
    pub resume: bool,
    /// Absolute URL of an upload to continue (or an `s3` upload's location).
    pub resume_from: Option<String>,
    /// The app's own S3 backend (the `s3` option's callbacks), instead of an endpoint.
    pub s3: Option<Object>,
    /// The endpoint is a tus server (`protocol: "tus"`).
    pub tus: bool,
    /// `chunkSize` was given (else a tus upload may choose larger slices).
    pub chunk_size_given: bool,
}

/// The source, checked.
pub enum SourceValue {
    /// A Blob or File.
    Blob(Blob),
    /// A ReadableStream.
    Stream(ReadableStream),
}

fn type_error(message: String) -> JsValue {
    js_sys::TypeError::new(&message).into()
}

fn range_error(message: String) -> JsValue {
    js_sys::RangeError::new(&message).into()
}

/// A readable description of any thrown JS value, `Error` or not.
pub fn describe_js_error(value: &JsValue) -> String {
    if let Some(error) = value.dyn_ref::<js_sys::Error>() {
        let name = String::from(error.name());
        let message = String::from(error.message());
        return if message.is_empty() {
            name
        } else {
            format!("{name}: {message}")
        };
    }
    if let Some(text) = value.as_string() {
        return text;
    }
    match value.as_f64() {
        Some(number) => number_text(number),
        None => type_name(value),
    }
}

/// A number as JS writes it. Rust's float formatting would add ~20 KB of wasm.
pub fn number_text(number: f64) -> String {
    js_sys::Number::from(number)
        .to_string_with_radix(10)
        .map(String::from)
        .unwrap_or_default()
}

/// Checks the source: a Blob (File included) or an unlocked ReadableStream.
pub fn parse_source(source: &JsValue) -> Result<SourceValue, JsValue> {
    if let Some(blob) = source.dyn_ref::<Blob>() {
        return Ok(SourceValue::Blob(blob.clone()));
    }
    if let Some(stream) = source.dyn_ref::<ReadableStream>() {
        if stream.locked() {
            return Err(type_error(
                "source is a ReadableStream that is already locked to a reader".into(),
            ));
        }
        return Ok(SourceValue::Stream(stream.clone()));
    }
    Err(type_error(format!(
        "source must be a File, a Blob or a ReadableStream<Uint8Array>; got {}",
        type_name(source)
    )))
}

fn type_name(value: &JsValue) -> String {
    if value.is_null() {
        return "null".into();
    }
    if value.is_array() {
        return "an array".into();
    }
    let kind = value.js_typeof().as_string().unwrap_or_default();
    if kind == "object" {
        if let Some(name) = Reflect::get(value, &"constructor".into())
            .ok()
            .and_then(|c| Reflect::get(&c, &"name".into()).ok())
            .and_then(|n| n.as_string())
        {
            return format!("a {name}");
        }
    }
    kind
}

fn get(options: &JsValue, name: &str) -> JsValue {
    Reflect::get(options, &name.into()).unwrap_or(JsValue::UNDEFINED)
}

/// An integer option: `TypeError` if not a number, `RangeError` if not a safe integer.
fn integer(options: &JsValue, name: &'static str, allowed: &str) -> Result<Option<u64>, JsValue> {
    let value = get(options, name);
    if value.is_undefined() {
        return Ok(None);
    }
    let Some(number) = value.as_f64() else {
        return Err(type_error(format!(
            "{name} must be a number ({allowed}); got {}",
            type_name(&value)
        )));
    };
    if !number.is_finite()
        || number.fract() != 0.0
        || number < 0.0
        || number > MAX_SAFE_SIZE_BYTES as f64
    {
        return Err(range_error(format!(
            "{name} must be {allowed}; got {}",
            number_text(number)
        )));
    }
    Ok(Some(number as u64))
}

fn string_map(options: &JsValue, name: &'static str) -> Result<Vec<(String, String)>, JsValue> {
    let value = get(options, name);
    if value.is_undefined() {
        return Ok(Vec::new());
    }
    if !value.is_object() || value.is_array() || value.is_function() {
        return Err(type_error(format!(
            "{name} must be an object of string values; got {}",
            type_name(&value)
        )));
    }
    let mut out = Vec::new();
    for entry in Object::entries(value.unchecked_ref::<Object>()).iter() {
        let pair: Array = entry.unchecked_into();
        let key = pair.get(0).as_string().unwrap_or_default();
        let Some(text) = pair.get(1).as_string() else {
            return Err(type_error(format!(
                "{name}.{key} must be a string; got {}",
                type_name(&pair.get(1))
            )));
        };
        out.push((key, text));
    }
    Ok(out)
}

/// A string option that is one of `allowed`: its index there, 0 (the default) when absent.
fn choice(options: &JsValue, name: &str, allowed: [&str; 2]) -> Result<usize, JsValue> {
    let value = get(options, name);
    if value.is_undefined() {
        return Ok(0);
    }
    let [first, second] = allowed;
    match value.as_string() {
        Some(text) => allowed.iter().position(|a| *a == text).ok_or_else(|| {
            range_error(format!(
                "{name} must be \"{first}\" or \"{second}\"; got \"{text}\""
            ))
        }),
        None => Err(type_error(format!(
            "{name} must be the string \"{first}\" or \"{second}\"; got {}",
            type_name(&value)
        ))),
    }
}

fn function(options: &JsValue, name: &'static str) -> Result<Option<Function>, JsValue> {
    let value = get(options, name);
    if value.is_undefined() {
        return Ok(None);
    }
    value
        .dyn_into::<Function>()
        .map(Some)
        .map_err(|v| type_error(format!("{name} must be a function; got {}", type_name(&v))))
}

/// The page (or worker script) URL that relative endpoints resolve against.
fn base_url() -> Option<String> {
    let location = Reflect::get(&js_sys::global(), &"location".into()).ok()?;
    Reflect::get(&location, &"href".into()).ok()?.as_string()
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses and validates the options object, given the source's kind.
pub fn parse_options(options: &JsValue, source: &SourceValue) -> Result<Parsed, JsValue> {
    if !options.is_object() || options.is_function() || options.is_array() {
        return Err(type_error(format!(
            "options must be an object with at least an endpoint, e.g. {{ endpoint: \"/uploads\" }}; got {}",
            type_name(options)
        )));
    }
    for key in Object::keys(options.unchecked_ref::<Object>()).iter() {
        let key = key.as_string().unwrap_or_default();
        if !KNOWN_OPTIONS.contains(&key.as_str()) {
            return Err(type_error(format!(
                "unknown option \"{key}\"; the options are {}",
                KNOWN_OPTIONS.join(", ")
            )));
        }
    }

    let s3 = s3_callbacks(options)?;
    let tus = choice(options, "protocol", ["chunkwise", "tus"])? == 1;
    if tus && s3.is_some() {
        return Err(type_error(
            "protocol \"tus\" cannot be used with s3: the s3 callbacks upload to S3".into(),
        ));
    }
    let endpoint = match &s3 {
        Some(_) => {
            for name in ["endpoint", "headers"] {
                if !get(options, name).is_undefined() {
                    return Err(type_error(format!(
                        "{name} cannot be used with s3: the s3 callbacks talk to the app's backend, and each part goes to the URL and headers signPart returns"
                    )));
                }
            }
            // Keys the resume records of these uploads apart from any server's.
            crate::s3::S3_ENDPOINT.to_string()
        }
        None => parse_endpoint(options)?,
    };
    let defaults = Options::default();
    let chunk_allowed = "an integer number of bytes from 262144 (256 KiB) to 1073741824 (1 GiB)";
    let chunk_size = integer(options, "chunkSize", chunk_allowed)?;
    let chunk_size_bytes = chunk_size.unwrap_or(defaults.chunk_size_bytes);
    let max_in_flight = integer(options, "maxInFlight", "an integer from 1 to 32")?
        // Too large for a u32 is out of range all the same: validate() says so.
        .map_or(defaults.max_in_flight, |v| {
            u32::try_from(v).unwrap_or(u32::MAX)
        });
    let retries = integer(options, "retries", "an integer from 0 to 100")?
        .map_or(defaults.retries, |v| u32::try_from(v).unwrap_or(u32::MAX));
    let size = integer(options, "size", "an integer number of bytes")?;
    let size_bytes = match source {
        SourceValue::Blob(blob) => {
            if let Some(size) = size.filter(|&s| s as f64 != blob.size()) {
                return Err(range_error(format!(
                    "size is only for a ReadableStream source; this Blob has {} bytes, not {size}",
                    blob.size() as u64
                )));
            }
            None
        }
        SourceValue::Stream(_) => size,
    };
    let digest = match choice(options, "digest", ["sha-256", "none"])? {
        1 => DigestAlgorithm::None,
        _ => DigestAlgorithm::Sha256,
    };
    let stall_timeout_ms = integer(
        options,
        "stallTimeoutMs",
        "an integer number of milliseconds from 100 to 3600000",
    )?
    .unwrap_or(defaults.stall_timeout_ms);
    let offline_timeout_ms = integer(
        options,
        "offlineTimeoutMs",
        "an integer number of milliseconds from 0 to 86400000",
    )?
    .unwrap_or(defaults.offline_timeout_ms);
    let options_valid = Options {
        chunk_size_bytes,
        max_in_flight,
        size_bytes,
        digest,
        retries,
        stall_timeout_ms,
        offline_timeout_ms,
    }
    .validate()
    .map_err(|e| range_error(e.to_string()))?;
    // The protocol forbids parallel appends to one upload: one PATCH at a time, in order.
    // maxInFlight still bounds a queue's files in flight together.
    let options_valid = if tus {
        options_valid.in_order()
    } else {
        options_valid
    };

    // Inserted one by one: collect() would sort, and compile a sort into the wasm.
    let mut metadata = BTreeMap::new();
    for (key, value) in string_map(options, "metadata")? {
        if tus && !crate::tus::is_metadata_key(&key) {
            return Err(type_error(format!(
                "metadata key \"{key}\" cannot be sent in tus's Upload-Metadata: a key must be non-empty ASCII without spaces or commas"
            )));
        }
        metadata.insert(key, value);
    }
    let headers = string_map(options, "headers")?;
    for (name, _) in &headers {
        if !is_header_name(name) {
            return Err(type_error(format!(
                "headers.{name} is not a valid HTTP header name"
            )));
        }
    }
    let signal = match get(options, "signal") {
        v if v.is_undefined() => None,
        v => Some(v.dyn_into::<AbortSignal>().map_err(|v| {
            type_error(format!(
                "signal must be an AbortSignal (from an AbortController); got {}",
                type_name(&v)
            ))
        })?),
    };
    let resume = match get(options, "resume") {
        v if v.is_undefined() => true,
        v => v.as_bool().ok_or_else(|| {
            type_error(format!("resume must be a boolean; got {}", type_name(&v)))
        })?,
    };
    let resume_from = match get(options, "resumeFrom") {
        v if v.is_undefined() => None,
        v => {
            let Some(text) = v.as_string().filter(|t| !t.trim().is_empty()) else {
                return Err(type_error(format!(
                    "resumeFrom must be an upload id or its URL (upload.location); got {}",
                    type_name(&v)
                )));
            };
            if matches!(source, SourceValue::Stream(_)) {
                return Err(type_error(
                    "resumeFrom needs a File or Blob source: a stream cannot be read again".into(),
                ));
            }
            if s3.is_some() {
                if !is_s3_location(&text) {
                    return Err(type_error(format!(
                        "resumeFrom \"{text}\" is not the location of an upload made with s3 (upload.location)"
                    )));
                }
                Some(text)
            } else {
                Some(resolve_upload(&text, &endpoint)?)
            }
        }
    };
    if s3.is_some() && digest == DigestAlgorithm::None {
        return Err(range_error(
            "digest \"none\" cannot be used with s3: signPart is given each part's SHA-256, which the store checks".into(),
        ));
    }
    Ok(Parsed {
        resume,
        resume_from,
        options: options_valid,
        endpoint,
        metadata,
        headers,
        on_progress: function(options, "onProgress")?,
        on_slice: function(options, "onSlice")?,
        signal,
        s3,
        tus,
        chunk_size_given: chunk_size.is_some(),
    })
}

/// The `endpoint` option, resolved against the page.
fn parse_endpoint(options: &JsValue) -> Result<String, JsValue> {
    let endpoint = get(options, "endpoint");
    let Some(endpoint) = endpoint.as_string().filter(|e| !e.trim().is_empty()) else {
        return Err(type_error(format!(
            "endpoint must be a non-empty string, the URL of the server's /uploads (absolute or relative to the page), unless s3 is given; got {}",
            type_name(&endpoint)
        )));
    };
    let resolved = match base_url() {
        Some(base) => Url::new_with_base(&endpoint, &base),
        None => Url::new(&endpoint),
    }
    .map_err(|_| type_error(format!("endpoint \"{endpoint}\" is not a valid URL")))?;
    if !matches!(resolved.protocol().as_str(), "http:" | "https:") {
        return Err(type_error(format!(
            "endpoint must be an http: or https: URL; got \"{endpoint}\""
        )));
    }
    Ok(resolved.href())
}

/// The `s3` option, when given.
fn s3_callbacks(options: &JsValue) -> Result<Option<Object>, JsValue> {
    let value = get(options, "s3");
    if value.is_undefined() {
        return Ok(None);
    }
    parse_callbacks(&value)
        .map(Some)
        .map_err(|(problem, found)| type_error(format!("{problem}; got {}", type_name(&found))))
}

/// An upload id (resolved under the endpoint) or an upload URL, as an absolute URL.
fn resolve_upload(text: &str, endpoint: &str) -> Result<String, JsValue> {
    let is_id = text.len() == 22
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if is_id {
        return Ok(format!("{}/{text}", endpoint.trim_end_matches('/')));
    }
    Url::new_with_base(text, endpoint)
        .map(|u| u.href())
        .map_err(|_| {
            type_error(format!(
                "resumeFrom \"{text}\" is neither an upload id nor a URL"
            ))
        })
}

fn set(target: &Object, key: &str, value: impl Into<JsValue>) {
    let _ = Reflect::set(target, &key.into(), &value.into());
}

fn number_or_null(value: Option<f64>) -> JsValue {
    value.map_or(JsValue::NULL, JsValue::from_f64)
}

/// The object handed to `onProgress`.
pub fn progress_to_js(progress: &Progress) -> JsValue {
    let object = Object::new();
    set(&object, "bytesSent", progress.bytes_sent as f64);
    set(
        &object,
        "bytesAcknowledged",
        progress.bytes_acknowledged as f64,
    );
    set(
        &object,
        "bytesTotal",
        number_or_null(progress.bytes_total.map(|v| v as f64)),
    );
    set(&object, "slicesDone", progress.slices_done as f64);
    set(
        &object,
        "slicesTotal",
        number_or_null(progress.slices_total.map(|v| v as f64)),
    );
    set(&object, "inFlight", progress.in_flight);
    set(&object, "bytesPerSecond", progress.bytes_per_second);
    set(&object, "etaSeconds", number_or_null(progress.eta_seconds));
    object.into()
}

/// The object handed to `onSlice`.
pub fn slice_event_to_js(index: u64, state: &str, attempt: u32) -> JsValue {
    let object = Object::new();
    set(&object, "index", index as f64);
    set(&object, "state", state);
    set(&object, "attempt", attempt);
    object.into()
}

/// The value `start()` resolves with.
pub fn outcome_to_js(outcome: &Outcome, elapsed_ms: f64) -> JsValue {
    let object = Object::new();
    set(&object, "id", outcome.id.as_str());
    set(&object, "location", outcome.location.as_str());
    set(&object, "size", outcome.size_bytes as f64);
    set(&object, "slices", outcome.slices as f64);
    set(&object, "chunkSize", outcome.chunk_size_bytes as f64);
    set(&object, "resumedSlices", outcome.resumed_slices as f64);
    // Empty when the bytes went straight to an object store: no whole-file hash exists.
    match outcome.sha256.as_str() {
        "" => set(&object, "sha256", JsValue::NULL),
        sha256 => set(&object, "sha256", sha256),
    }
    set(&object, "verified", outcome.verified);
    set(&object, "elapsedMs", elapsed_ms);
    object.into()
}

/// An `Error` named `UploadError` (or `AbortError`) with `code` and, when known, `status`.
pub fn error_to_js(error: &UploadError) -> JsValue {
    let js = js_sys::Error::new(&error.message);
    let name = if error.code == chunkwise_core::engine::ErrorCode::Aborted {
        "AbortError"
    } else {
        "UploadError"
    };
    js.set_name(name);
    set(&js, "code", error.code.as_str());
    if let Some(status) = error.status {
        set(&js, "status", status);
    }
    js.into()
}
