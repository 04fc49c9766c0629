//! `herald-loadtest`: the command line over [`herald_loadtest::run`].

use clap::Parser;
use herald_loadtest::Options;

/// jemalloc, as Herald: glibc's malloc took a fifth of the generator's CPU
/// (`perf record -a`, a 986/s run: 3.0 % of the machine's samples of its
/// 14.9 %), CPU taken from the machine it measures.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = Options::parse();
    let report = herald_loadtest::run(opts.clone()).await?;
    println!("{}", report.table());
    if let Some(path) = &opts.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
        eprintln!("figures written to {}", path.display());
    }
    Ok(())
}
