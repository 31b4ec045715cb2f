//! The summary printed at the end of a bench run and written under `target/`: for each
//! figure, this store's median time next to each peer's, and their ratio. Medians are read
//! from the `estimates.json` criterion wrote for the benchmarks of this run (files older
//! than the run are ignored, so a peer skipped now never shows an old figure).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One row: a figure of this store and the peers it is compared with (criterion ids,
/// `group/function`).
struct Row {
    figure: String,
    ours: String,
    peers: Vec<(String, String)>,
}

/// One row of the interleaved table: medians measured outside criterion, in alternation.
struct Interleaved {
    figure: String,
    label: String,
    ours_ns: f64,
    theirs_ns: f64,
    ratio: f64,
}

pub struct Summary {
    name: &'static str,
    started: SystemTime,
    rows: Vec<Row>,
    interleaved: Vec<Interleaved>,
    interleaved_note: String,
}

impl Summary {
    pub fn new(name: &'static str) -> Summary {
        Summary {
            name,
            started: SystemTime::now(),
            rows: Vec::new(),
            interleaved: Vec::new(),
            interleaved_note: String::new(),
        }
    }

    /// Adds a row to the interleaved table: this store's and the peer's median ns per
    /// operation over alternating rounds, and the median of the per-round ratios (the
    /// peer's time over ours). `note` says how the rounds were run.
    pub fn interleaved(
        &mut self,
        figure: &str,
        label: &str,
        (ours_ns, theirs_ns, ratio): (f64, f64, f64),
        note: &str,
    ) {
        self.interleaved.push(Interleaved {
            figure: figure.into(),
            label: label.into(),
            ours_ns,
            theirs_ns,
            ratio,
        });
        self.interleaved_note = note.into();
    }

    /// Compares benchmark `ours` with each `(label, id)` peer.
    pub fn compare(&mut self, figure: &str, ours: &str, peers: &[(&str, &str)]) {
        let peers = peers.iter().map(|(l, id)| (l.to_string(), id.to_string())).collect();
        self.rows.push(Row { figure: figure.into(), ours: ours.into(), peers });
    }

    /// Prints the table and writes it to `target/bench-summary-<name>.md`.
    pub fn finish(self, note: &str) {
        let root = criterion_dir();
        let median = |id: &str| median_ns(&root, id, self.started);
        let mut out = String::new();
        let _ = writeln!(out, "| figure | this store | peer | peer's time | ratio |");
        let _ = writeln!(out, "|---|---|---|---|---|");
        for row in &self.rows {
            let Some(ours) = median(&row.ours) else { continue };
            for (label, id) in &row.peers {
                let Some(theirs) = median(id) else { continue };
                let verdict = verdict(theirs / ours);
                let _ = writeln!(
                    out,
                    "| {} | {} | {label} | {} | {verdict} |",
                    row.figure,
                    pretty(ours),
                    pretty(theirs)
                );
            }
        }
        let _ = writeln!(out, "\n{note}");
        if !self.interleaved.is_empty() {
            let _ = writeln!(
                out,
                "\n| figure, interleaved | this store | peer | peer's time | ratio |"
            );
            let _ = writeln!(out, "|---|---|---|---|---|");
            for r in &self.interleaved {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} |",
                    r.figure,
                    pretty(r.ours_ns),
                    r.label,
                    pretty(r.theirs_ns),
                    verdict(r.ratio)
                );
            }
            let _ = writeln!(out, "\n{}", self.interleaved_note);
        }
        println!("\n== summary ({}; medians of this run)\n{out}", self.name);
        let path = root.parent().unwrap_or(&root).join(format!("bench-summary-{}.md", self.name));
        if let Err(e) = std::fs::write(&path, &out) {
            println!("could not write {}: {e}", path.display());
        } else {
            println!("written to {}", path.display());
        }
    }
}

/// A ratio of the peer's time over ours, as words.
fn verdict(ratio: f64) -> String {
    if ratio >= 1.0 {
        format!("{ratio:.2}× faster")
    } else {
        format!("{:.2}× slower", 1.0 / ratio)
    }
}

fn pretty(ns: f64) -> String {
    match ns {
        ns if ns >= 1e6 => format!("{:.2} ms", ns / 1e6),
        ns if ns >= 1e3 => format!("{:.2} µs", ns / 1e3),
        ns => format!("{ns:.0} ns"),
    }
}

/// Where criterion writes (`$CARGO_TARGET_DIR/criterion`, else the workspace's
/// `target/criterion`: this package is a member of the workspace at its parent directory).
fn criterion_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = manifest.parent().unwrap_or(manifest);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace.join("target"), PathBuf::from);
    target.join("criterion")
}

/// The median, in ns, of benchmark `id` as estimated in this run.
fn median_ns(root: &Path, id: &str, since: SystemTime) -> Option<f64> {
    find(root, id, since).and_then(|dir| {
        let text = std::fs::read_to_string(dir.join("estimates.json")).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        json["median"]["point_estimate"].as_f64()
    })
}

/// The `new/` directory whose `benchmark.json` names `id` and was written since `since`.
fn find(root: &Path, id: &str, since: SystemTime) -> Option<PathBuf> {
    for group in std::fs::read_dir(root).ok()?.flatten() {
        for bench in std::fs::read_dir(group.path()).ok()?.flatten() {
            let dir = bench.path().join("new");
            let Ok(text) = std::fs::read_to_string(dir.join("benchmark.json")) else { continue };
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
            let written = std::fs::metadata(dir.join("estimates.json")).and_then(|m| m.modified());
            if json["full_id"].as_str() == Some(id) && written.is_ok_and(|t| t >= since) {
                return Some(dir);
            }
        }
    }
    None
}
