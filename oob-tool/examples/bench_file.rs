//! Write an import file of N devices with fresh ES256 public keys, for the
//! import benchmark (`bench/import_1m.sh`). Unlike `idprov-oob generate` it
//! keeps no private keys: a million key files would only measure the file
//! system. Every key is distinct (the tool refuses a key under two IDs).
//!
//! Usage: cargo run --release -p idprov-oob --example bench_file -- N OUT.csv

use std::io::Write;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: bench_file N OUT.csv"))?
        .parse()?;
    let out = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: bench_file N OUT.csv"))?;
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let start = Instant::now();
    let mut f = std::io::BufWriter::new(std::fs::File::create(&out)?);
    writeln!(f, "device_id,public_key,key_format")?;
    let batch = 10_000;
    let mut done = 0;
    while done < n {
        let m = batch.min(n - done);
        let per = m.div_ceil(threads);
        let parts: Vec<anyhow::Result<Vec<String>>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|t| {
                    let from = done + t * per;
                    let to = (from + per).min(done + m);
                    s.spawn(move || {
                        (from..to)
                            .map(|i| {
                                let pair = idprov_oob::generate::es256()?;
                                Ok(format!("bench-{i:07},\"{}\",ES256_PEM\n", pair.public_pem))
                            })
                            .collect()
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("thread failed")))
                })
                .collect()
        });
        for p in parts {
            for line in p? {
                f.write_all(line.as_bytes())?;
            }
        }
        done += m;
    }
    f.flush()?;
    eprintln!(
        "wrote {n} ES256 entries to {out} in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
