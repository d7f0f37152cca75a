//! `dropship inventory` against the real `ansible-inventory` / `ansible --list-hosts` on every
//! inventory of the corpus (tests/inventories/ and inventory/): no hand-written expectations.

use std::time::Instant;

use crate::support::ansible::{Ansible, Case, args, corpus, dropship, parallel_map};
use dropship::inventory::Inventory;
use serde_json::Value;

fn json(bytes: &[u8], what: &str) -> Result<Value, String> {
    serde_json::from_slice(bytes)
        .map_err(|e| format!("{what}: not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// The inventory warnings dropship repeats after Ansible, in Ansible's words and order: a host
/// and a group with the same name, and the YAML keys the reader skips. Ansible's type names
/// ("it is a <class '...'>") are its own, so only what comes before them is compared. Each must
/// appear once (Ansible's display prints a warning once too).
fn same_warnings(theirs: &[u8], ours: &[u8]) -> Result<(), String> {
    let pick = |stderr: &[u8], prefix: &str| -> Vec<String> {
        String::from_utf8_lossy(stderr)
            .lines()
            .filter_map(|line| line.strip_prefix(prefix))
            .map(str::trim)
            .filter(|w| w.starts_with("Found both group and host") || w.starts_with("Skipping "))
            .map(|w| w.split(" it is a ").next().unwrap_or(w).to_string())
            .collect()
    };
    let (expected, actual) = (pick(theirs, "[WARNING]:"), pick(ours, "warning:"));
    if expected == actual {
        Ok(())
    } else {
        Err(format!(
            "warnings differ\n  ansible: {expected:#?}\n  dropship: {actual:#?}"
        ))
    }
}

/// --list, --graph and --host (first and last host) of one case; `Err` describes every mismatch.
fn compare_views(ansible: &Ansible, case: &Case) -> Result<(), String> {
    let sources = case.source_args();
    let run_both = |extra: &[&str]| {
        let mut a = sources.clone();
        a.extend(args(extra));
        let ours = dropship(&[args(&["inventory"]), a.clone()].concat());
        let theirs = ansible.run("ansible-inventory", &a);
        (ours, theirs)
    };
    let mut problems = Vec::new();
    let (ours, theirs) = run_both(&["--list"]);
    if !theirs.success() {
        return Err(format!(
            "{}: ansible-inventory --list failed: {}",
            case.name,
            String::from_utf8_lossy(&theirs.stderr)
        ));
    }
    // Ansible only warns about a source it cannot parse (and goes on with what it read);
    // dropship refuses it with exit code 2.
    if String::from_utf8_lossy(&theirs.stderr).contains("Unable to parse") {
        return match ours.status.code() {
            Some(2) => Ok(()),
            code => Err(format!(
                "{}: ansible could not parse it, dropship exited {code:?}",
                case.name
            )),
        };
    }
    if let Err(e) = same_warnings(&theirs.stderr, &ours.stderr) {
        problems.push(e);
    }
    let expected = json(&theirs.stdout, "ansible-inventory --list")?;
    match json(&ours.stdout, "dropship inventory --list") {
        Ok(actual) if actual == expected => {}
        Ok(actual) => problems.push(format!(
            "--list differs\n  ansible: {expected}\n  dropship: {actual}\n  stderr: {}",
            String::from_utf8_lossy(&ours.stderr)
        )),
        Err(e) => problems.push(format!(
            "{e} / stderr: {}",
            String::from_utf8_lossy(&ours.stderr)
        )),
    }
    let (ours, theirs) = run_both(&["--graph"]);
    let (ours_text, theirs_text) = (
        String::from_utf8_lossy(&ours.stdout),
        String::from_utf8_lossy(&theirs.stdout),
    );
    if ours_text.trim_end() != theirs_text.trim_end() {
        problems.push(format!(
            "--graph differs\n--- ansible\n{theirs_text}\n--- dropship\n{ours_text}"
        ));
    }
    // --host for the first and the last host with variables (by name).
    let mut hosts: Vec<String> = expected["_meta"]["hostvars"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    hosts.sort();
    let picked: Vec<&String> = hosts
        .first()
        .into_iter()
        .chain(hosts.last().filter(|_| hosts.len() > 1))
        .collect();
    for host in picked {
        let (ours, theirs) = run_both(&["--host", host]);
        let expected = json(&theirs.stdout, "ansible-inventory --host")?;
        match json(&ours.stdout, "dropship inventory --host") {
            Ok(actual) if actual == expected => {}
            Ok(actual) => problems.push(format!(
                "--host {host} differs\n  ansible: {expected}\n  dropship: {actual}"
            )),
            Err(e) => problems.push(e),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{}:\n{}", case.name, problems.join("\n")))
    }
}

#[test]
fn list_graph_and_host_match_ansible_inventory() {
    let Some(ansible) = Ansible::find("list_graph_and_host_match_ansible_inventory") else {
        return;
    };
    let cases = corpus();
    assert!(
        cases.len() >= 30,
        "the corpus should hold at least 30 inventories, has {}",
        cases.len()
    );
    let started = Instant::now();
    let failures: Vec<String> = parallel_map(&cases, |case| compare_views(&ansible, case))
        .into_iter()
        .filter_map(Result::err)
        .collect();
    eprintln!(
        "compared --list/--graph/--host on {} inventories in {:.1?}",
        cases.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {} inventories differ:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// What `ansible PATTERN --list-hosts` says: the hosts, or that the pattern matched nothing.
fn ansible_list_hosts(
    ansible: &Ansible,
    case: &Case,
    pattern: &str,
    hash_seed: Option<u32>,
) -> Result<Vec<String>, String> {
    let cli_args = [
        vec![pattern.to_string()],
        case.source_args(),
        args(&["--list-hosts"]),
    ]
    .concat();
    let out = match hash_seed {
        Some(seed) => ansible.run_with_hash_seed("ansible", &cli_args, seed),
        None => ansible.run("ansible", &cli_args),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.success() {
        return Err(stderr.into_owned());
    }
    if stderr.contains("Could not match supplied host pattern") {
        return Err("no match".into());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(stdout
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("hosts ("))
        .skip(1)
        .map(|l| l.trim().to_string())
        .collect())
}

/// Ansible walks nested groups through a Python set, so where two groups at the same depth
/// both have children its host order depends on the process's hash seed. Asks it again under
/// a few seeds.
fn ansible_order_varies(ansible: &Ansible, case: &Case, pattern: &str, first: &[String]) -> bool {
    (0..10).any(|seed| {
        ansible_list_hosts(ansible, case, pattern, Some(seed)).is_ok_and(|again| again != first)
    })
}

fn same_members(a: &[String], b: &[String]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort();
    b.sort();
    a == b
}

/// `--limit` selection against ansible, for "all" on every case and each case's patterns.txt.
fn compare_patterns(ansible: &Ansible, case: &Case) -> Vec<String> {
    let inventory = match Inventory::load_with(&case.sources, case.vault_secrets()) {
        Ok(inventory) => inventory,
        Err(e) => return vec![format!("{}: load failed: {e}", case.name)],
    };
    let mut problems = Vec::new();
    for pattern in std::iter::once("all").chain(case.patterns.iter().map(String::as_str)) {
        let expected = ansible_list_hosts(ansible, case, pattern, None);
        let actual = inventory.select(pattern);
        match (&expected, &actual) {
            (Ok(e), Ok(a)) if e == a => {}
            (Err(_), Err(_)) => {}
            (Ok(e), Ok(a))
                if ansible_order_varies(ansible, case, pattern, e) && same_members(e, a) =>
            {
                eprintln!(
                    "note: {}: Ansible's own host order for '{pattern}' varies between runs; compared as sets",
                    case.name
                );
            }
            _ => problems.push(format!(
                "{}: pattern '{pattern}'\n  ansible: {expected:?}\n  dropship: {actual:?}",
                case.name
            )),
        }
    }
    if let Some(pattern) = case.patterns.first() {
        let a = [case.source_args(), args(&["--list", "--limit", pattern])].concat();
        let expected = ansible.run("ansible-inventory", &a);
        let ours = dropship(
            &[
                args(&["inventory"]),
                case.source_args(),
                args(&["--list", "-l", pattern]),
            ]
            .concat(),
        );
        let same = match (
            json(&expected.stdout, "ansible"),
            json(&ours.stdout, "dropship"),
        ) {
            (Ok(e), Ok(o)) => e == o,
            _ => !expected.success() && !ours.status.success(),
        };
        if !same {
            problems.push(format!(
                "{}: --list --limit '{pattern}' differs\n  ansible: {}\n  dropship: {}{}",
                case.name,
                String::from_utf8_lossy(&expected.stdout),
                String::from_utf8_lossy(&ours.stdout),
                String::from_utf8_lossy(&ours.stderr)
            ));
        }
    }
    problems
}

#[test]
fn limit_patterns_match_ansible_list_hosts() {
    let Some(ansible) = Ansible::find("limit_patterns_match_ansible_list_hosts") else {
        return;
    };
    let cases = corpus();
    let started = Instant::now();
    let failures: Vec<String> = parallel_map(&cases, |case| compare_patterns(&ansible, case))
        .into_iter()
        .flatten()
        .collect();
    let patterns: usize = cases.iter().map(|c| c.patterns.len() + 1).sum();
    eprintln!(
        "compared {patterns} host patterns on {} inventories in {:.1?}",
        cases.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} pattern mismatches:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// `--limit @FILE` (a retry file: a pattern per line) and `@FILE` among other parts, against
/// `ansible all --limit ... --list-hosts` and `ansible-inventory --list --limit ...`. Ansible
/// lists a limit's hosts in the order of `all`, dropship in the pattern's (as for any limit),
/// so the hosts are compared as sets, the `--list` documents exactly.
fn compare_limit_files(ansible: &Ansible, case: &Case, scratch: &std::path::Path) -> Vec<String> {
    let inventory = match Inventory::load_with(&case.sources, case.vault_secrets()) {
        Ok(inventory) => inventory,
        Err(e) => return vec![format!("{}: load failed: {e}", case.name)],
    };
    let Ok(all) = inventory.select("all") else {
        return Vec::new();
    };
    let (Some(first), Some(last)) = (all.first(), all.last()) else {
        return Vec::new();
    };
    // The last host, then blank and padded lines, the first host, and (with three hosts or
    // more) one excluded: what a retry file holds, and what a hand-edited one might.
    let mut lines = format!("{last}\n\n  {first}  \n");
    if all.len() > 2 {
        lines.push_str(&format!("!{}\n", all[1]));
    }
    let file = scratch.join(format!("{}.retry", case.name.replace('/', "_")));
    std::fs::write(&file, lines).unwrap();
    let at = format!("@{}", file.display());
    let mut problems = Vec::new();
    let mut limits = vec![at.clone()];
    if let Some(pattern) = case.patterns.first() {
        limits.push(format!("{at}:{pattern}"));
    }
    for limit in &limits {
        let cli = [
            args(&["all"]),
            case.source_args(),
            args(&["--limit", limit, "--list-hosts"]),
        ];
        let out = ansible.run("ansible", &cli.concat());
        let stdout = String::from_utf8_lossy(&out.stdout);
        let expected: Vec<String> = stdout
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("hosts ("))
            .skip(1)
            .map(|l| l.trim().to_string())
            .collect();
        let warned = String::from_utf8_lossy(&out.stderr).contains("Could not match");
        match inventory.limit(limit) {
            Ok(actual) if out.success() && !warned && same_members(&expected, &actual) => {}
            Err(_) if !out.success() || warned => {}
            actual => problems.push(format!(
                "{}: --limit '{limit}'\n  ansible: {expected:?} ({})\n  dropship: {actual:?}",
                case.name,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        }
        let list = [case.source_args(), args(&["--list", "--limit", limit])].concat();
        let theirs = ansible.run("ansible-inventory", &list);
        let ours = dropship(&[args(&["inventory"]), list].concat());
        // Where Ansible only warns of a part matching nothing, dropship refuses the limit.
        let theirs_warned = String::from_utf8_lossy(&theirs.stderr).contains("Could not match");
        let same = match (
            json(&theirs.stdout, "ansible"),
            json(&ours.stdout, "dropship"),
        ) {
            _ if theirs_warned => !ours.status.success(),
            (Ok(e), Ok(o)) => e == o,
            _ => !theirs.success() && !ours.status.success(),
        };
        if !same {
            problems.push(format!(
                "{}: --list --limit '{limit}' differs\n  ansible: {}\n  dropship: {}{}",
                case.name,
                String::from_utf8_lossy(&theirs.stdout),
                String::from_utf8_lossy(&ours.stdout),
                String::from_utf8_lossy(&ours.stderr)
            ));
        }
    }
    problems
}

#[test]
fn limit_files_match_ansible() {
    let Some(ansible) = Ansible::find("limit_files_match_ansible") else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let cases = corpus();
    let failures: Vec<String> = parallel_map(&cases, |case| {
        compare_limit_files(&ansible, case, scratch.path())
    })
    .into_iter()
    .flatten()
    .collect();
    assert!(
        failures.is_empty(),
        "{} limit file mismatches:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
