//! Kubespray's retry rule for downloads: up to `download_retries` attempts, sleeping
//! `rand(0..retry_stagger) + 3` seconds between them, and only for errors that may go away.

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use rand::{RngExt, SeedableRng, rngs::StdRng};

/// Kubespray's fixed part of the delay between attempts.
const BASE_DELAY: Duration = Duration::from_secs(3);

/// Waits between attempts; injectable so tests need not sleep.
pub trait Sleeper: Send + Sync {
    fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()>;
}

/// The real clock.
pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, at least 1 (`download_retries`, default 4).
    pub attempts: u32,
    /// Upper bound (exclusive) of the random extra delay in seconds (`retry_stagger`, default 5).
    pub stagger_secs: u64,
    /// Seed for the jitter, for reproducible runs.
    pub seed: Option<u64>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            stagger_secs: 5,
            seed: None,
        }
    }
}

impl RetryPolicy {
    /// Run `op` until it succeeds, fails with an error `is_transient` rejects, or attempts run out.
    pub async fn run<T, E, F, Fut>(
        &self,
        sleeper: &dyn Sleeper,
        what: &str,
        is_transient: impl Fn(&E) -> bool,
        mut op: F,
    ) -> Result<T, E>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut rng = match self.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_rng(&mut rand::rng()),
        };
        let attempts = self.attempts.max(1);
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(value) => return Ok(value),
                Err(e) if attempt < attempts && is_transient(&e) => {
                    let delay = BASE_DELAY
                        + Duration::from_secs(rng.random_range(0..self.stagger_secs.max(1)));
                    tracing::warn!(
                        "{what}: attempt {attempt}/{attempts} failed: {e}; retrying in {}s",
                        delay.as_secs()
                    );
                    sleeper.sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Duration>>);

    impl Sleeper for Recorder {
        fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()> {
            self.0.lock().unwrap().push(duration);
            Box::pin(async {})
        }
    }

    #[tokio::test]
    async fn transient_errors_are_retried_with_staggered_delays() {
        let sleeper = Recorder::default();
        let policy = RetryPolicy {
            attempts: 4,
            stagger_secs: 5,
            seed: Some(1),
        };
        let mut calls = 0;
        let result: Result<(), String> = policy
            .run(
                &sleeper,
                "pull",
                |_| true,
                || {
                    calls += 1;
                    async { Err("503".to_string()) }
                },
            )
            .await;
        assert!(result.is_err());
        assert_eq!(calls, 4);
        let delays = sleeper.0.lock().unwrap().clone();
        assert_eq!(delays.len(), 3);
        assert!(
            delays.iter().all(|d| (3..8).contains(&d.as_secs())),
            "{delays:?}"
        );
    }

    #[tokio::test]
    async fn permanent_errors_fail_at_once() {
        let sleeper = Recorder::default();
        let mut calls = 0;
        let result: Result<(), String> = RetryPolicy::default()
            .run(
                &sleeper,
                "pull",
                |e: &String| !e.contains("not found"),
                || {
                    calls += 1;
                    async { Err("manifest not found".to_string()) }
                },
            )
            .await;
        assert!(result.is_err());
        assert_eq!(calls, 1);
        assert!(sleeper.0.lock().unwrap().is_empty());
    }
}
