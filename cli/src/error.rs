//! The CLI's error type; each variant displays exactly the line kubectl would print.

use std::fmt;

/// A Kubernetes `Status` returned by the server for a failed request.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct Status {
    pub message: String,
    pub reason: String,
    pub code: u16,
}

impl Status {
    /// Builds a Status from a non-2xx response body (a Status JSON, or anything else).
    pub fn from_body(code: u16, body: &[u8]) -> Status {
        match serde_json::from_slice::<Status>(body) {
            Ok(mut s) if !s.message.is_empty() || !s.reason.is_empty() => {
                if s.code == 0 {
                    s.code = code;
                }
                s
            }
            _ => {
                let text = String::from_utf8_lossy(body).trim().to_string();
                let message =
                    if text.is_empty() { format!("the server responded with status code {code}") } else { text };
                Status { message, reason: reason_for_code(code).to_string(), code }
            }
        }
    }

    /// Prefixes the message with where the object came from, as kubectl does
    /// (`error when creating "pod.yaml": ...`).
    pub fn with_source(mut self, verb: &str, source: &str) -> Status {
        self.message = format!("error when {verb} \"{source}\": {}", self.message);
        self
    }

    pub fn is_not_found(&self) -> bool {
        self.reason == "NotFound" || (self.reason.is_empty() && self.code == 404)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reason.is_empty() {
            write!(f, "Error from server: {}", self.message)
        } else {
            write!(f, "Error from server ({}): {}", self.reason, self.message)
        }
    }
}

fn reason_for_code(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Gone",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("error: cannot reach skerryd at {socket}: {source}; is skerryd running?")]
    Connect { socket: String, source: std::io::Error },
    #[error("{0}")]
    Status(Status),
    /// A client-side error; displayed as `error: <message>`.
    #[error("error: {0}")]
    Msg(String),
    #[error("error: {0}")]
    Http(#[from] hyper::Error),
    #[error("error: {0}")]
    Io(#[from] std::io::Error),
    #[error("error: invalid response from skerryd: {0}")]
    Json(#[from] serde_json::Error),
    /// Errors were already printed; exit with status 1.
    #[error("")]
    Reported,
    /// Exit with this status without printing anything (exec's remote exit code).
    #[error("")]
    Exit(i32),
}

impl Error {
    pub fn msg(m: impl Into<String>) -> Error {
        Error::Msg(m.into())
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Status(s) if s.is_not_found())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
