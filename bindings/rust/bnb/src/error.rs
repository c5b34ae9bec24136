use std::ffi::CStr;
use std::fmt;

use bnb_sys as sys;

/// Why a call failed: the C library's `bnb_status_t`, minus success.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    InvalidArgument,
    NotSupported,
    OutOfMemory,
    BackendUnavailable,
    Device,
    Internal,
    /// A status this binding does not know (from a newer library).
    Other(i32),
}

impl Status {
    /// The status for a raw `bnb_status_t`; `None` for `BNB_SUCCESS`.
    pub fn from_raw(raw: sys::bnb_status_t) -> Option<Status> {
        Some(match raw {
            sys::BNB_SUCCESS => return None,
            sys::BNB_ERR_INVALID_ARGUMENT => Status::InvalidArgument,
            sys::BNB_ERR_NOT_SUPPORTED => Status::NotSupported,
            sys::BNB_ERR_OUT_OF_MEMORY => Status::OutOfMemory,
            sys::BNB_ERR_BACKEND_UNAVAILABLE => Status::BackendUnavailable,
            sys::BNB_ERR_DEVICE => Status::Device,
            sys::BNB_ERR_INTERNAL => Status::Internal,
            other => Status::Other(other),
        })
    }

    pub fn raw(self) -> sys::bnb_status_t {
        match self {
            Status::InvalidArgument => sys::BNB_ERR_INVALID_ARGUMENT,
            Status::NotSupported => sys::BNB_ERR_NOT_SUPPORTED,
            Status::OutOfMemory => sys::BNB_ERR_OUT_OF_MEMORY,
            Status::BackendUnavailable => sys::BNB_ERR_BACKEND_UNAVAILABLE,
            Status::Device => sys::BNB_ERR_DEVICE,
            Status::Internal => sys::BNB_ERR_INTERNAL,
            Status::Other(raw) => raw,
        }
    }

    /// The library's name for this status (`bnb_status_string`).
    pub fn name(self) -> String {
        // SAFETY: bnb_status_string returns a static NUL-terminated string for any value.
        unsafe { c_text(sys::bnb_status_string(self.raw())) }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A failed call: the status and the library's message naming what was wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    status: Status,
    message: String,
}

impl Error {
    pub fn new(status: Status, message: impl Into<String>) -> Error {
        Error {
            status,
            message: message.into(),
        }
    }

    pub fn status(&self) -> Status {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// An argument this binding rejects before it reaches the library (a slice too short for
    /// what the call would write or read).
    pub(crate) fn invalid(message: String) -> Error {
        Error::new(Status::InvalidArgument, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.status)
        } else {
            write!(f, "{}: {}", self.status, self.message)
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Turns a raw status into a `Result`, picking up this thread's error message on failure.
pub(crate) fn check(raw: sys::bnb_status_t) -> Result<()> {
    match Status::from_raw(raw) {
        None => Ok(()),
        // SAFETY: the message is this thread's, valid until its next failing call; copied now.
        Some(status) => Err(Error::new(status, unsafe {
            c_text(sys::bnb_last_error_message())
        })),
    }
}

/// Copies a C string owned by the library; NULL reads as "".
pub(crate) unsafe fn c_text(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}
