//! A fleet in every state at once, end to end: nodes down, Flatcar, already holding the images
//! and to be loaded, in one push through the bastion. The 100-node version of this check is
//! `scripts/bench.sh fleet-scenario` (too slow for the suite).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::push::{push, regular_nodes};
use crate::support::defer;

#[test]
fn a_fleet_with_nodes_down_flatcar_and_up_to_date_is_reported_node_by_node_through_one_bastion_link()
 {
    let (tb, _lock) = testbed!();
    let regular: Vec<_> = regular_nodes(&tb).collect();
    assert!(regular.len() >= 3, "needs 3 nodes besides Flatcar");
    let holding = regular[0];
    let down = regular[regular.len() - 1];
    tb.reset_nodes();
    let cache = tempfile::tempdir().unwrap();
    let cache = cache.path().join("c");
    let first = push(
        &tb,
        &cache,
        &["--delegate", "localhost", "-l", &holding.name],
    );
    assert_eq!(first.code(), Some(0), "{}", first.stderr());

    tb.stop_sshd(down);
    let _back = defer(|| tb.start_sshd(down));
    let running = AtomicBool::new(true);
    let peak = AtomicUsize::new(0);
    let started = Instant::now();
    let run = std::thread::scope(|scope| {
        scope.spawn(|| {
            while running.load(Ordering::Relaxed) {
                peak.fetch_max(tb.bastion_connections(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        // More forks than nodes: every node at once, still through the same bastion link.
        let run = push(
            &tb,
            &cache,
            &["--delegate", "localhost", "-f", "100", "--retries", "2"],
        );
        running.store(false, Ordering::Relaxed);
        run
    });
    let elapsed = started.elapsed();

    assert_eq!(run.code(), Some(1), "{}", run.stderr());
    for node in &tb.nodes {
        let host = run.host(&node.name);
        let expected = if tb.is_flatcar(node) {
            "skipped_coreos"
        } else if node.name == down.name {
            "unreachable"
        } else if node.name == holding.name {
            "up_to_date"
        } else {
            "loaded"
        };
        assert_eq!(host["status"], expected, "{host}");
    }
    assert_eq!(run.host(&holding.name)["bytes_sent"], 0);
    let unreachable = run.host(&down.name);
    assert_eq!(unreachable["attempts"], 2, "{unreachable}");
    let reason = unreachable["reason"].as_str().unwrap();
    assert!(reason.contains(&down.name), "{reason}");
    assert!(
        run.stdout()
            .contains(&format!("unreachable hosts: {}", down.name)),
        "{}",
        run.stdout()
    );
    // A refused connection is known at once: two attempts a second apart, not a connect
    // timeout nor the staggered schedule.
    let down_for = unreachable["elapsed"].as_f64().unwrap();
    assert!(down_for < 10.0, "{down_for} s for a node that refuses");
    assert!(elapsed < Duration::from_secs(120), "{elapsed:?}");
    let connections = peak.load(Ordering::Relaxed);
    assert!(
        (1..=2).contains(&connections),
        "{connections} connections to the bastion at once"
    );
}
