//! Panic containment (decision MI1): a bug triggered by one object must not take down the
//! syncer, let alone the process. Every reconcile runs inside [`contain`]; a panic becomes an
//! error for that key, which is logged and retried with backoff like any other failure.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

/// A reconcile panicked.
#[derive(Debug, thiserror::Error)]
#[error("reconcile panicked: {0}")]
pub struct Panicked(pub String);

/// Runs `fut`, turning a panic into [`Panicked`].
pub async fn contain<T>(fut: impl Future<Output = T>) -> Result<T, Panicked> {
    AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .map_err(|p| Panicked(message(p.as_ref())))
}

fn message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn panics_become_errors_and_values_pass_through() {
        assert_eq!(contain(async { 7 }).await.unwrap(), 7);
        let err = contain(async {
            let v: Vec<u8> = Vec::new();
            v[3]
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("index out of bounds"), "{err}");
    }
}
