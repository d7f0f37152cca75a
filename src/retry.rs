//! Kubespray's retry policy: `until: … succeeded`, `retries: N`,
//! `delay: "{{ retry_stagger | random + 3 }}"`.
//!
//! Every attempt after the first waits `3 + rand(0..retry_stagger)` whole seconds, so that
//! many nodes failing at once (a bastion hiccup) do not all come back in the same second.
//! Only transient errors are retried: an authentication failure or a missing image would
//! fail the same way every time, so retrying them only hides the reason for longer. A refused
//! connection is in between: the host answered that nothing listens there, which a restarting
//! daemon explains but a stopped one does not, so it is tried once more after a short pause
//! rather than on the whole schedule.

use std::future::Future;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use sha2::{Digest, Sha256};

/// Whether an error may go away by itself (connection lost, timeout, interrupted load).
pub trait Transient {
    fn is_transient(&self) -> bool;

    /// How to retry it; by default the whole schedule for a transient error.
    fn retry(&self) -> Retry {
        Retry::staggered_if(self.is_transient())
    }
}

/// What trying again can do for an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// It would fail the same way again.
    Never,
    /// Once more after [`ONCE_PAUSE`], at most once in a run of attempts: a refused connection
    /// (a daemon restarting is back within a second; a stopped one stays refused).
    Once,
    /// Every attempt of the policy, Kubespray's staggered delay between them.
    Staggered,
}

impl Retry {
    /// The whole schedule for a transient error, none for another.
    pub fn staggered_if(transient: bool) -> Retry {
        if transient {
            Retry::Staggered
        } else {
            Retry::Never
        }
    }
}

/// The fixed part of Kubespray's delay (`| random + 3`).
const BASE_DELAY: Duration = Duration::from_secs(3);

/// The pause before the one retry of a [`Retry::Once`] error.
pub const ONCE_PAUSE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, at least 1 (Kubespray's `download_retries`).
    pub attempts: u32,
    /// Upper bound (exclusive) of the random extra delay, in whole seconds (`retry_stagger`).
    pub stagger_secs: u64,
}

impl RetryPolicy {
    pub fn new(attempts: u32, stagger_secs: u64) -> Self {
        RetryPolicy {
            attempts: attempts.max(1),
            stagger_secs,
        }
    }

    /// The wait before the next attempt: 3 s plus a whole number of seconds below the stagger,
    /// as Jinja's `random` filter picks it.
    pub fn delay(&self, jitter: &mut Jitter) -> Duration {
        let extra = if self.stagger_secs == 0 {
            0
        } else {
            jitter.rng.random_range(0..self.stagger_secs)
        };
        BASE_DELAY + Duration::from_secs(extra)
    }
}

/// A per-task random source: reproducible from `--seed` and the task's name, so a test sees
/// the same delays whatever order the tasks run in.
pub struct Jitter {
    rng: StdRng,
}

impl Jitter {
    pub fn new(seed: Option<u64>, name: &str) -> Self {
        let seed = seed.unwrap_or_else(rand::random);
        let digest = Sha256::new()
            .chain_update(seed.to_le_bytes())
            .chain_update(name.as_bytes())
            .finalize();
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest[..8]);
        Jitter {
            rng: StdRng::seed_from_u64(u64::from_le_bytes(bytes)),
        }
    }
}

/// What a retried operation ended with, and how it got there.
#[derive(Debug)]
pub struct Retried<T, E> {
    pub result: Result<T, E>,
    /// Attempts made (1 when the first one settled it).
    pub attempts: u32,
    /// The waits between attempts, in order.
    pub delays: Vec<Duration>,
}

/// Runs `op` until it succeeds, fails permanently, or the attempts run out (a
/// [`Retry::Once`] error is retried only if no earlier one was).
/// `on_retry(attempt, &error, delay)` is called before each wait (for progress output).
pub async fn retry<T, E, Op, Fut>(
    policy: RetryPolicy,
    jitter: &mut Jitter,
    mut on_retry: impl FnMut(u32, &E, Duration),
    mut op: Op,
) -> Retried<T, E>
where
    E: Transient,
    Op: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delays = Vec::new();
    let mut attempt = 1;
    let mut retried_once = false;
    loop {
        let result = op(attempt).await;
        let delay = match &result {
            Err(err) if attempt < policy.attempts => match err.retry() {
                Retry::Staggered => Some(policy.delay(jitter)),
                Retry::Once if !retried_once => {
                    retried_once = true;
                    Some(ONCE_PAUSE)
                }
                Retry::Once | Retry::Never => None,
            },
            _ => None,
        };
        match (result, delay) {
            (Err(err), Some(delay)) => {
                on_retry(attempt, &err, delay);
                delays.push(delay);
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            (result, _) => {
                return Retried {
                    result,
                    attempts: attempt,
                    delays,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[derive(Debug, PartialEq)]
    enum FakeError {
        Flaky,
        Permanent,
        Refused,
    }

    impl Transient for FakeError {
        fn is_transient(&self) -> bool {
            !matches!(self, FakeError::Permanent)
        }

        fn retry(&self) -> Retry {
            match self {
                FakeError::Flaky => Retry::Staggered,
                FakeError::Permanent => Retry::Never,
                FakeError::Refused => Retry::Once,
            }
        }
    }

    /// Fails with `errors` in order, then succeeds.
    async fn run(
        policy: RetryPolicy,
        errors: Vec<FakeError>,
    ) -> (Retried<u32, FakeError>, Duration) {
        let start = tokio::time::Instant::now();
        let remaining = Cell::new(errors.into_iter());
        let mut jitter = Jitter::new(Some(7), "node1");
        let outcome = retry(
            policy,
            &mut jitter,
            |_, _, _| {},
            |attempt| {
                let next = {
                    let mut it = remaining.take();
                    let next = it.next();
                    remaining.set(it);
                    next
                };
                async move { next.map_or(Ok(attempt), Err) }
            },
        )
        .await;
        (outcome, start.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn succeeds_after_transient_failures_waiting_between_attempts() {
        let policy = RetryPolicy::new(4, 5);
        let (outcome, elapsed) = run(policy, vec![FakeError::Flaky, FakeError::Flaky]).await;
        assert_eq!(outcome.result, Ok(3));
        assert_eq!(outcome.attempts, 3);
        assert_eq!(outcome.delays.len(), 2);
        for delay in &outcome.delays {
            assert!(
                (3..=7).contains(&delay.as_secs()),
                "delay {delay:?} out of 3..=7 s"
            );
            assert_eq!(
                delay.subsec_nanos(),
                0,
                "Kubespray's delays are whole seconds"
            );
        }
        // The virtual clock advanced by exactly the waits: nothing else sleeps.
        assert_eq!(elapsed, outcome.delays.iter().sum::<Duration>());
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_last_attempt() {
        let errors = (0..10).map(|_| FakeError::Flaky).collect();
        let (outcome, _) = run(RetryPolicy::new(4, 5), errors).await;
        assert_eq!(outcome.result, Err(FakeError::Flaky));
        assert_eq!(outcome.attempts, 4);
        assert_eq!(outcome.delays.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let (outcome, elapsed) = run(RetryPolicy::new(4, 5), vec![FakeError::Permanent]).await;
        assert_eq!(outcome.result, Err(FakeError::Permanent));
        assert_eq!(outcome.attempts, 1);
        assert!(outcome.delays.is_empty());
        assert_eq!(elapsed, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_is_retried_once_after_a_short_pause() {
        use FakeError::*;
        let (outcome, elapsed) = run(RetryPolicy::new(4, 5), vec![Refused, Refused, Refused]).await;
        assert_eq!(outcome.result, Err(Refused));
        assert_eq!(outcome.attempts, 2);
        assert_eq!(outcome.delays, [ONCE_PAUSE]);
        assert_eq!(elapsed, ONCE_PAUSE);
        // Once in the whole run: a refusal after a staggered retry ends it too.
        let (outcome, _) = run(RetryPolicy::new(4, 5), vec![Refused, Flaky, Refused]).await;
        assert_eq!((outcome.result, outcome.attempts), (Err(Refused), 3));
        assert_eq!(outcome.delays[0], ONCE_PAUSE);
        assert!(outcome.delays[1] >= BASE_DELAY);
        // A refusal that goes away is a success on the second attempt.
        let (outcome, _) = run(RetryPolicy::new(4, 5), vec![Refused]).await;
        assert_eq!((outcome.result, outcome.attempts), (Ok(2), 2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_attempt_policy_never_waits() {
        let (outcome, _) = run(RetryPolicy::new(0, 5), vec![FakeError::Flaky]).await;
        assert_eq!(outcome.attempts, 1);
        assert_eq!(outcome.result, Err(FakeError::Flaky));
    }

    #[test]
    fn delays_cover_the_whole_stagger_range_and_nothing_else() {
        let policy = RetryPolicy::new(4, 5);
        let mut jitter = Jitter::new(Some(1), "node1");
        let seen: std::collections::BTreeSet<u64> = (0..500)
            .map(|_| policy.delay(&mut jitter).as_secs())
            .collect();
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![3, 4, 5, 6, 7]);
    }

    #[test]
    fn zero_stagger_waits_exactly_the_base_delay() {
        let policy = RetryPolicy::new(4, 0);
        let mut jitter = Jitter::new(Some(1), "node1");
        assert_eq!(policy.delay(&mut jitter), Duration::from_secs(3));
    }

    #[test]
    fn a_seed_makes_the_jitter_reproducible_per_name() {
        let policy = RetryPolicy::new(4, 60);
        let draw = |name: &str| {
            let mut jitter = Jitter::new(Some(42), name);
            (0..8)
                .map(|_| policy.delay(&mut jitter))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw("node1"), draw("node1"));
        assert_ne!(draw("node1"), draw("node2"));
    }
}
