//! The protocol v1 [`Transport`] over the global `fetch` (window or worker).
//!
//! Every request owns an `AbortController`; dropping the request's future aborts it, so
//! an aborted or failed upload leaves no request running.

use chunkwise_core::engine::{CreatedUpload, SliceData, Transport, TransportError};
use chunkwise_core::protocol::{
    self, Complete, Completed, CreateUpload, Created, ErrorBody, Status,
};
use chunkwise_core::retry::Failure;
use js_sys::Promise;
use serde::de::DeserializeOwned;
use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortController, Headers, RequestInit, Response, Url};

use crate::interop::describe_js_error;
use crate::source::Body;

#[wasm_bindgen]
extern "C" {
    /// `fetch` of the global scope, whichever it is.
    #[wasm_bindgen(js_name = fetch)]
    fn global_fetch(input: &str, init: &RequestInit) -> Promise;
}

/// Aborts its request when dropped before the answer was read.
struct AbortOnDrop(Option<AbortController>);

impl AbortOnDrop {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(controller) = self.0.take() {
            controller.abort();
        }
    }
}

/// Talks protocol v1 to one server.
#[derive(Debug)]
pub struct FetchTransport {
    endpoint: String,
    headers: Vec<(String, String)>,
}

fn network_error(message: String) -> TransportError {
    TransportError {
        failure: Failure::Network,
        code: None,
        message,
    }
}

fn protocol_error(status: u16, message: String) -> TransportError {
    TransportError {
        failure: Failure::Status {
            status,
            retry_after_ms: None,
        },
        code: Some("protocol".into()),
        message,
    }
}

impl FetchTransport {
    /// `endpoint` is already absolute; `headers` go on every request.
    pub fn new(endpoint: String, headers: Vec<(String, String)>) -> Self {
        Self { endpoint, headers }
    }

    async fn send(
        &self,
        method: &str,
        url: &str,
        body: Option<&JsValue>,
        extra: &[(&str, &str)],
    ) -> Result<Response, TransportError> {
        let headers = Headers::new().map_err(|e| network_error(describe_js_error(&e)))?;
        for (name, value) in self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .chain(extra.iter().copied())
        {
            headers
                .set(name, value)
                .map_err(|e| network_error(describe_js_error(&e)))?;
        }
        let controller =
            AbortController::new().map_err(|e| network_error(describe_js_error(&e)))?;
        let init = RequestInit::new();
        init.set_method(method);
        init.set_headers(&headers);
        init.set_signal(Some(&controller.signal()));
        if let Some(body) = body {
            init.set_body(body);
        }
        let mut guard = AbortOnDrop(Some(controller));
        let answer = JsFuture::from(global_fetch(url, &init)).await;
        let response: Response = answer
            .map_err(|e| {
                network_error(format!("{method} {url} failed: {}", describe_js_error(&e)))
            })?
            .unchecked_into();
        if response.ok() {
            guard.disarm();
            return Ok(response);
        }
        let status = response.status();
        let retry_after_ms = response
            .headers()
            .get("retry-after")
            .ok()
            .flatten()
            .and_then(|v| parse_retry_after(&v));
        let text = match response.text() {
            Ok(promise) => JsFuture::from(promise)
                .await
                .ok()
                .and_then(|t| t.as_string())
                .unwrap_or_default(),
            Err(_) => String::new(),
        };
        guard.disarm();
        let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => (Some(body.error.code), body.error.message),
            Err(_) => (
                None,
                format!(
                    "{method} {url} answered {status} {}",
                    response.status_text()
                ),
            ),
        };
        Err(TransportError {
            failure: Failure::Status {
                status,
                retry_after_ms,
            },
            code,
            message,
        })
    }

    /// `POST`s `request` as JSON (the protocol's bodies always serialise).
    async fn post_json(
        &self,
        url: &str,
        request: &impl Serialize,
    ) -> Result<Response, TransportError> {
        let body = JsValue::from_str(&serde_json::to_string(request).unwrap_or_default());
        self.send(
            "POST",
            url,
            Some(&body),
            &[("content-type", "application/json")],
        )
        .await
    }

    async fn json<T: DeserializeOwned>(response: &Response) -> Result<T, TransportError> {
        let status = response.status();
        let promise = response
            .text()
            .map_err(|e| network_error(describe_js_error(&e)))?;
        let text = JsFuture::from(promise)
            .await
            .map_err(|e| {
                network_error(format!(
                    "reading the answer failed: {}",
                    describe_js_error(&e)
                ))
            })?
            .as_string()
            .unwrap_or_default();
        serde_json::from_str(&text).map_err(|e| {
            protocol_error(
                status,
                format!("the server's answer is not protocol v1: {e}"),
            )
        })
    }
}

/// `Retry-After` as delay-seconds or an HTTP date, in milliseconds from now.
fn parse_retry_after(value: &str) -> Option<f64> {
    if let Ok(seconds) = value.trim().parse::<f64>() {
        return (seconds >= 0.0).then_some(seconds * 1000.0);
    }
    let at = js_sys::Date::parse(value);
    (!at.is_nan()).then(|| (at - js_sys::Date::now()).max(0.0))
}

impl Transport for FetchTransport {
    type Body = Body;

    async fn create(&self, request: &CreateUpload) -> Result<CreatedUpload, TransportError> {
        let response = self.post_json(&self.endpoint, request).await?;
        let created: Created = Self::json(&response).await?;
        // `Location` is relative to the endpoint; without CORS exposing it, the id is enough.
        let location = response
            .headers()
            .get("location")
            .ok()
            .flatten()
            .unwrap_or_else(|| format!("{}/{}", self.endpoint.trim_end_matches('/'), created.id));
        let location = Url::new_with_base(&location, &self.endpoint)
            .map(|u| u.href())
            .map_err(|e| {
                protocol_error(
                    response.status(),
                    format!("bad Location {location:?}: {}", describe_js_error(&e)),
                )
            })?;
        Ok(CreatedUpload { location, created })
    }

    async fn put_slice(
        &self,
        location: &str,
        slice: &SliceData<Body>,
    ) -> Result<(), TransportError> {
        let url = format!("{location}/slices/{}", slice.index);
        let digest = slice.sha256.as_ref().map(protocol::content_digest);
        let extra: Vec<(&str, &str)> = digest
            .iter()
            .map(|d| (protocol::CONTENT_DIGEST, d.as_str()))
            .collect();
        self.send("PUT", &url, Some(&slice.body.value), &extra)
            .await
            .map(drop)
    }

    async fn complete(
        &self,
        location: &str,
        request: &Complete,
    ) -> Result<Completed, TransportError> {
        let response = self
            .post_json(&format!("{location}/complete"), request)
            .await?;
        Self::json(&response).await
    }

    async fn status(&self, location: &str) -> Result<Status, TransportError> {
        let response = self.send("GET", location, None, &[]).await?;
        Self::json(&response).await
    }

    async fn delete(&self, location: &str) -> Result<(), TransportError> {
        self.send("DELETE", location, None, &[]).await.map(drop)
    }
}
