//! Benchmark helper for scripts/bench-registry.sh (not a test): resolve an image with the
//! registry client and stream every layer of one platform to nowhere, verifying each; print
//! one JSON line with the bytes, the time, the CPU time and the peak RSS.
//!
//!   registry_pull IMAGE [--plain-http] [--platform OS/ARCH[/VARIANT]] [--parallel N]

mod common;

use std::time::Instant;

use dropship::image::ImageRef;
use dropship::image::platform::Platform;
use dropship::registry::{Registry, RegistryConfig};
use futures::{StreamExt, TryStreamExt};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let image = ImageRef::parse(&args.next().ok_or("usage: registry_pull IMAGE [...]")?)?;
    let mut config = RegistryConfig::default();
    let mut platform = Platform::parse("linux/amd64")?;
    let mut parallel = 1;
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--plain-http" => config.plain_http.push(image.domain().to_string()),
            "--platform" => platform = Platform::parse(&args.next().ok_or("--platform value")?)?,
            "--parallel" => parallel = args.next().ok_or("--parallel value")?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let bytes = runtime.block_on(async {
        let registry = Registry::new(config)?;
        let resolved = registry.resolve_platform(&image, &platform).await?;
        let layers = resolved.image().layers.clone();
        futures::stream::iter(layers)
            .map(|layer| {
                let (registry, image) = (registry.clone(), image.clone());
                async move {
                    let mut blob = registry.blob(&image, &layer).await?;
                    let mut received = 0u64;
                    while let Some(chunk) = blob.next().await {
                        received += chunk?.len() as u64;
                    }
                    Ok::<u64, Box<dyn std::error::Error>>(received)
                }
            })
            .buffer_unordered(parallel)
            .try_fold(0, |total, n| async move { Ok(total + n) })
            .await
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    println!(
        r#"{{"bytes":{bytes},"seconds":{seconds:.3},"mb_per_s":{:.1},"cpu_seconds":{cpu:.2},"peak_rss_kib":{}}}"#,
        bytes as f64 / 1e6 / seconds,
        common::peak_rss_kib()
    );
    Ok(())
}

/// User plus system CPU time of this process, from /proc/self/stat (in USER_HZ = 100 ticks).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at state, field 3.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}
