//! Throughput of the SSH transport: stream N MiB into `cat >/dev/null` on each selected host,
//! all at once, through the inventory's bastion. Run by scripts/bench-ssh.sh, which compares it
//! with OpenSSH `ssh -J`.
//!
//!   ssh_throughput -i INVENTORY [-l PATTERN] [--mib N] [--pool K] [--cipher NAME]

mod common;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use dropship::inventory::Inventory;
use dropship::inventory::connection;
use dropship::ssh::{ConnectOptions, Connector, RemoteCommand};
use tokio::io::AsyncReadExt;

struct Args {
    inventory: std::path::PathBuf,
    limit: String,
    mib: u64,
    pool: usize,
    cipher: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        inventory: "".into(),
        limit: "all".into(),
        mib: 1024,
        pool: 1,
        cipher: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "-i" => args.inventory = value()?.into(),
            "-l" => args.limit = value()?,
            "--mib" => args.mib = value()?.parse().map_err(|e| format!("--mib: {e}"))?,
            "--pool" => args.pool = value()?.parse().map_err(|e| format!("--pool: {e}"))?,
            "--cipher" => args.cipher = Some(value()?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.inventory.as_os_str().is_empty() {
        return Err(
            "usage: ssh_throughput -i INVENTORY [-l PATTERN] [--mib N] [--pool K] [--cipher NAME]"
                .into(),
        );
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ssh_throughput: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let inventory = Inventory::load(std::slice::from_ref(&args.inventory))?;
    let bastion = connection::bastion_host(&inventory);
    let hosts = inventory
        .select(&args.limit)?
        .into_iter()
        .filter(|h| Some(h) != bastion.as_ref())
        .map(|h| connection::resolve(&inventory, &h, &connection::Defaults::default()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut options = ConnectOptions {
        bastion_connections: args.pool,
        ..ConnectOptions::default()
    };
    if let Some(cipher) = &args.cipher {
        options.ciphers = vec![cipher.clone()];
    }
    let connector = Connector::new(options);
    let mut sessions = Vec::new();
    for host in &hosts {
        sessions.push(connector.connect(host).await?);
    }
    let bytes = args.mib * 1024 * 1024;
    let started = Instant::now();
    let sink = RemoteCommand::shell("cat >/dev/null");
    let transfers = sessions.iter().map(|session| {
        let sink = &sink;
        async move {
            let sent = Arc::new(AtomicU64::new(0));
            let began = Instant::now();
            let output = session
                .exec(sink)
                .stdin(tokio::io::repeat(0).take(bytes))
                .count_sent(sent)
                .run()
                .await?;
            output.check(session.host(), sink)?;
            Ok::<_, dropship::ssh::SshError>((
                session.host().to_string(),
                began.elapsed().as_secs_f64(),
            ))
        }
    });
    let results = futures::future::try_join_all(transfers).await?;
    let wall = started.elapsed().as_secs_f64();
    for (host, seconds) in &results {
        println!(
            "host {host} {:.1} MB/s ({:.2}s)",
            bytes as f64 / 1e6 / seconds,
            seconds
        );
    }
    println!(
        "total hosts={} pool={} bytes={} wall={wall:.2}s aggregate={:.1} MB/s peak_rss={} KiB",
        results.len(),
        args.pool,
        bytes * results.len() as u64,
        (bytes * results.len() as u64) as f64 / 1e6 / wall,
        common::peak_rss_kib()
    );
    Ok(())
}
