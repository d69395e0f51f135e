//! What the upgrade benches measure at a TCP sink: when each record arrived and how
//! old it was, and from that latency percentiles and the longest gap between arrivals.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::AsyncBufReadExt;

/// Milliseconds since the Unix epoch (the generator's wall-clock event times).
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Arrivals at the TCP sink: (arrival ms, event time ms) per record.
pub type Arrivals = Arc<Mutex<Vec<(i64, i64)>>>;

/// Listens on a free loopback port for a `sink.tcp`; every JSON line with a `"t"`
/// field (the record's event time, set by a `map`) is an arrival.
pub async fn listen() -> (String, Arrivals) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = l.local_addr().expect("its address").to_string();
    let arrivals: Arrivals = Arc::default();
    let a = arrivals.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = l.accept().await else {
                return;
            };
            let a = a.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(sock).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let ts = line
                        .split("\"t\":")
                        .nth(1)
                        .and_then(|r| r.split([',', '}']).next())
                        .and_then(|t| t.trim().parse::<i64>().ok());
                    if let Some(ts) = ts {
                        a.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((unix_ms(), ts));
                    }
                }
            });
        }
    });
    (addr, arrivals)
}

/// The `p` quantile (0..=1) of `v`; 0 when empty.
pub fn percentile(mut v: Vec<i64>, p: f64) -> i64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Over arrivals in `[from, to)`: latency p50 and p99, the longest gap between
/// arrivals (the edges of the interval count), and how many arrived.
pub fn window(arrivals: &Arrivals, from: i64, to: i64) -> (i64, i64, i64, usize) {
    let a = arrivals.lock().unwrap_or_else(|p| p.into_inner());
    let sel: Vec<(i64, i64)> = a
        .iter()
        .copied()
        .filter(|(t, _)| *t >= from && *t < to)
        .collect();
    let lat: Vec<i64> = sel.iter().map(|(t, ts)| t - ts).collect();
    let mut times: Vec<i64> = sel.iter().map(|(t, _)| *t).collect();
    times.sort_unstable();
    let gap = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(to - from)
        .max(times.first().map_or(to - from, |f| f - from))
        .max(times.last().map_or(0, |l| to - l));
    (
        percentile(lat.clone(), 0.5),
        percentile(lat, 0.99),
        gap,
        sel.len(),
    )
}
