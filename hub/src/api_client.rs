//! A client of a running node's HTTP API (`hub::api`): the `hub` binary's client commands and
//! the network harness (which drives every node of a topology as a separate process) use it.

use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::time::Duration;

/// Why a request to a node's API failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiClientError {
    /// The token cannot be put in a header.
    #[error("the API token holds characters a header cannot carry")]
    Token,
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Client(String),
    /// Nothing answered, or the connection broke.
    #[error(
        "no node answers at {base} (is `hub serve` running with api = ... in its config? set --api or VHUB_API): {reason}"
    )]
    Unreachable {
        /// The API's base URL.
        base: String,
        /// What the HTTP client said.
        reason: String,
    },
    /// The node refused the request.
    #[error("{path}: {status}: {message}")]
    Refused {
        /// The request path.
        path: String,
        /// The HTTP status.
        status: u16,
        /// The node's error message.
        message: String,
    },
    /// The reply is not what the request returns.
    #[error("{path}: unexpected reply {text}")]
    Reply {
        /// The request path.
        path: String,
        /// The reply's body.
        text: String,
    },
}

/// One node's API, authenticated with its bearer token.
#[derive(Clone, Debug)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client of the API at `addr`; requests time out after `timeout`.
    pub fn new(addr: SocketAddr, token: &str, timeout: Duration) -> Result<Self, ApiClientError> {
        let mut headers = reqwest::header::HeaderMap::new();
        let mut auth = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ApiClientError::Token)?;
        auth.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, auth);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .default_headers(headers)
            .build()
            .map_err(|e| ApiClientError::Client(e.to_string()))?;
        Ok(ApiClient {
            base: format!("http://{addr}"),
            http,
        })
    }

    /// `GET path`, the reply decoded as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiClientError> {
        let r = self.http.get(format!("{}{path}", self.base)).send().await;
        self.read(path, r).await
    }

    /// `POST path` with a JSON body, the reply decoded as `T` (a reply without a body reads as
    /// JSON `null`).
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<T, ApiClientError> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await;
        self.read(path, r).await
    }

    async fn read<T: DeserializeOwned>(
        &self,
        path: &str,
        r: reqwest::Result<reqwest::Response>,
    ) -> Result<T, ApiClientError> {
        let unreachable = |e: reqwest::Error| ApiClientError::Unreachable {
            base: self.base.clone(),
            reason: e.to_string(),
        };
        let r = r.map_err(unreachable)?;
        let status = r.status();
        let text = r.text().await.map_err(unreachable)?;
        if !status.is_success() {
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
                .unwrap_or(text);
            return Err(ApiClientError::Refused {
                path: path.into(),
                status: status.as_u16(),
                message,
            });
        }
        let body = if text.is_empty() { "null" } else { &text };
        serde_json::from_str(body).map_err(|_| ApiClientError::Reply {
            path: path.into(),
            text,
        })
    }
}
