//! The protocol's JSON bodies, through the browser's own `JSON` and plain objects.
//!
//! serde_json would compile a parser, a float printer and serde's visitors into the wasm
//! (about a fifth of it, measured with twiggy); the browser already has a JSON parser.
//! The shapes are the core's [`chunkwise_core::protocol`] types, read field by field with
//! the same rules: numbers must be non-negative safe integers.

use std::collections::BTreeMap;

use chunkwise_core::protocol::{
    Complete, Completed, CreateUpload, Created, ErrorBody, ErrorDetail, Status, Transfer,
};
use js_sys::{Array, Object, Reflect};
use wasm_bindgen::{JsCast, JsValue};

/// A protocol body read from a parsed JSON value; the error names the field.
pub trait FromJson: Sized {
    /// Reads `value` (what `JSON.parse` returned).
    fn from_json(value: &JsValue) -> Result<Self, String>;
}

/// Parses `text` as JSON into `T`.
pub fn parse<T: FromJson>(text: &str) -> Result<T, String> {
    T::from_json(&parse_value(text)?)
}

/// Parses `text` as JSON.
pub fn parse_value(text: &str) -> Result<JsValue, String> {
    js_sys::JSON::parse(text).map_err(|_| "it is not JSON".to_string())
}

/// Where a create or status answer says the slices go (to the server when absent).
fn transfer(value: &JsValue) -> Transfer {
    match field(value, "transfer").as_string().as_deref() {
        Some("direct") => Transfer::Direct,
        _ => Transfer::Server,
    }
}

/// A presigned request to the object store: `{method, url, headers}`.
pub struct Signed {
    /// The presigned URL.
    pub url: String,
    /// The headers the signature covers.
    pub headers: Vec<(String, String)>,
    /// The method, when not `PUT` (tus: `PATCH`).
    pub method: Option<String>,
    /// Bytes at the slice's start the receiver already holds, not to be sent (tus).
    pub skip: u64,
}

impl FromJson for Signed {
    fn from_json(value: &JsValue) -> Result<Self, String> {
        let mut headers = Vec::new();
        for (name, text) in string_map(value, "headers")? {
            headers.push((name, text));
        }
        Ok(Signed {
            url: string(value, "url")?,
            headers,
            method: field(value, "method").as_string(),
            skip: field(value, "skip").as_f64().unwrap_or(0.0) as u64,
        })
    }
}

/// The `sign` request body of a direct upload.
pub fn sign_body(slice: u64, size: u64, sha256_base64: Option<&str>) -> JsValue {
    let body = Object::new();
    set(&body, "slice", JsValue::from_f64(slice as f64));
    set(&body, "size", JsValue::from_f64(size as f64));
    set(
        &body,
        "sha256",
        sha256_base64.map_or(JsValue::NULL, JsValue::from_str),
    );
    body.into()
}

/// `JSON.stringify` of a value built by [`create_body`] or [`complete_body`].
pub fn stringify(value: &JsValue) -> JsValue {
    js_sys::JSON::stringify(value).map_or(JsValue::NULL, JsValue::from)
}

fn field(value: &JsValue, name: &str) -> JsValue {
    if !value.is_object() {
        return JsValue::UNDEFINED;
    }
    Reflect::get(value, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED)
}

fn string(value: &JsValue, name: &str) -> Result<String, String> {
    field(value, name)
        .as_string()
        .ok_or_else(|| format!("{name} is not a string"))
}

pub(crate) fn optional_string(value: &JsValue, name: &str) -> Result<Option<String>, String> {
    let v = field(value, name);
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    v.as_string()
        .map(Some)
        .ok_or_else(|| format!("{name} is not a string"))
}

fn integer(v: &JsValue, name: &str) -> Result<u64, String> {
    match v.as_f64() {
        Some(n) if n >= 0.0 && n.fract() == 0.0 && n <= 9_007_199_254_740_991.0 => Ok(n as u64),
        _ => Err(format!("{name} is not a non-negative integer")),
    }
}

fn uint(value: &JsValue, name: &str) -> Result<u64, String> {
    integer(&field(value, name), name)
}

fn optional_uint(value: &JsValue, name: &str) -> Result<Option<u64>, String> {
    let v = field(value, name);
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    integer(&v, name).map(Some)
}

fn protocol(value: &JsValue) -> Result<u32, String> {
    Ok(optional_uint(value, "protocol")?.map_or(1, |v| v.min(u32::MAX as u64) as u32))
}

fn string_map(value: &JsValue, name: &str) -> Result<BTreeMap<String, String>, String> {
    let v = field(value, name);
    let mut map = BTreeMap::new();
    if v.is_undefined() || v.is_null() {
        return Ok(map);
    }
    let object = v
        .dyn_ref::<Object>()
        .ok_or_else(|| format!("{name} is not an object"))?;
    for entry in Object::entries(object).iter() {
        let pair: Array = entry.unchecked_into();
        let (Some(key), Some(text)) = (pair.get(0).as_string(), pair.get(1).as_string()) else {
            return Err(format!("{name} holds a value that is not a string"));
        };
        map.insert(key, text);
    }
    Ok(map)
}

impl FromJson for Created {
    fn from_json(value: &JsValue) -> Result<Self, String> {
        Ok(Created {
            id: string(value, "id")?,
            chunk_size: uint(value, "chunkSize")?,
            size: optional_uint(value, "size")?,
            protocol: protocol(value)?,
            transfer: transfer(value),
        })
    }
}

impl FromJson for Status {
    fn from_json(value: &JsValue) -> Result<Self, String> {
        let received = field(value, "received");
        let ranges = received
            .dyn_ref::<Array>()
            .ok_or("received is not an array")?;
        let mut pairs = Vec::with_capacity(ranges.length() as usize);
        for range in ranges.iter() {
            let start = integer(&Reflect::get_u32(&range, 0).unwrap_or_default(), "received")?;
            let end = integer(&Reflect::get_u32(&range, 1).unwrap_or_default(), "received")?;
            pairs.push([start, end]);
        }
        Ok(Status {
            id: string(value, "id")?,
            chunk_size: uint(value, "chunkSize")?,
            size: optional_uint(value, "size")?,
            received: pairs,
            bytes_received: uint(value, "bytesReceived")?,
            complete: field(value, "complete")
                .as_bool()
                .ok_or("complete is not a boolean")?,
            protocol: protocol(value)?,
            transfer: transfer(value),
            metadata: string_map(value, "metadata")?,
        })
    }
}

impl FromJson for Completed {
    fn from_json(value: &JsValue) -> Result<Self, String> {
        Ok(Completed {
            id: string(value, "id")?,
            size: uint(value, "size")?,
            // null when the bytes went straight to an object store.
            sha256: optional_string(value, "sha256")?,
            slices_sha256: optional_string(value, "slicesSha256")?,
        })
    }
}

impl FromJson for ErrorBody {
    fn from_json(value: &JsValue) -> Result<Self, String> {
        let error = field(value, "error");
        Ok(ErrorBody {
            error: ErrorDetail {
                code: string(&error, "code")?,
                message: string(&error, "message")?,
            },
        })
    }
}

fn set(object: &Object, name: &str, value: JsValue) {
    let _ = Reflect::set(object, &JsValue::from_str(name), &value);
}

/// The `POST /uploads` body.
pub fn create_body(request: &CreateUpload) -> JsValue {
    let body = Object::new();
    set(
        &body,
        "chunkSize",
        JsValue::from_f64(request.chunk_size as f64),
    );
    if let Some(size) = request.size {
        set(&body, "size", JsValue::from_f64(size as f64));
    }
    if let Some(metadata) = &request.metadata {
        let map = Object::new();
        for (key, value) in metadata {
            set(&map, key, JsValue::from_str(value));
        }
        set(&body, "metadata", map.into());
    }
    body.into()
}

/// The `complete` body.
pub fn complete_body(request: &Complete) -> JsValue {
    let body = Object::new();
    if let Some(size) = request.size {
        set(&body, "size", JsValue::from_f64(size as f64));
    }
    if let Some(sha256) = &request.sha256 {
        set(&body, "sha256", JsValue::from_str(sha256));
    }
    if let Some(slices) = &request.slices_sha256 {
        set(&body, "slicesSha256", JsValue::from_str(slices));
    }
    body.into()
}
