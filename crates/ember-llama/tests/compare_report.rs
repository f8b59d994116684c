//! The report of `compare_policies` (an example's own code, compiled here so `cargo test` checks
//! it): the committed results parse, their goals are what the code computes from their rows, and
//! each goal follows the rows it is about. Also runs the configuration list's own unit tests.

#![allow(dead_code)]

#[path = "../../../examples/common/mod.rs"]
mod common;
#[path = "../../../examples/compare/configs.rs"]
mod configs;
#[path = "../../../examples/compare/measure.rs"]
mod measure;
#[path = "../../../examples/compare/quality.rs"]
mod quality;
#[path = "../../../examples/compare/report.rs"]
mod report;

use measure::Row;
use report::{Goal, Report};

/// Run-time path (tests run in the package root): a compile-time one goes stale when a target
/// directory is shared between clones.
const RESULTS: &str = "../../benches/results";

fn committed(stem: &str) -> Report {
    let path = format!("{RESULTS}/{stem}.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {path}: {e}"))
}

fn goal<'a>(goals: &'a [Goal], starts: &str) -> &'a Goal {
    goals.iter().find(|g| g.goal.starts_with(starts)).unwrap_or_else(|| panic!("no goal starting with {starts:?}"))
}

#[test]
fn committed_goals_are_what_the_rows_give() {
    for stem in ["cpu-smollm2", "cpu-synthetic-tinyllama"] {
        let report = committed(stem);
        assert!(report.device.starts_with("cpu"), "{stem}: {}", report.device);
        assert!(report.rows.iter().any(|r| r.name == "dense"), "{stem}: no dense row");
        let again = report::goals(&report.rows, false);
        assert_eq!(
            serde_json::to_value(&again).unwrap(),
            serde_json::to_value(&report.goals).unwrap(),
            "{stem}: committed goals differ from the code's (re-run `compare_policies --render`)"
        );
        // The Markdown carries every configuration and the goals.
        let md = report::markdown(&report);
        for row in &report.rows {
            assert!(md.contains(&format!("| {} |", row.name)), "{stem}: {} missing from the table", row.name);
        }
        assert!(md.contains("## Goals"), "{stem}: no goals section");
    }
}

#[test]
fn lossless_equals_dense_in_the_committed_smollm2_run() {
    let report = committed("cpu-smollm2");
    assert!(report.quality.lossless_equals_dense);
    let ppl = |s: &str| report.quality.schemes.iter().find(|q| q.scheme == s).map(|q| q.perplexity);
    assert_eq!(ppl("lossless"), ppl("dense"));
    for row in report.rows.iter().filter(|r| r.scheme == "lossless") {
        assert_eq!(row.error, None, "{}", row.name);
        assert_eq!(row.same_tokens_as_dense, Some(true), "{}", row.name);
    }
}

fn rows() -> Vec<Row> {
    committed("cpu-smollm2").rows
}

fn set(rows: &mut [Row], name: &str, f: impl Fn(&mut Row)) {
    let row = rows.iter_mut().find(|r| r.name == name).unwrap_or_else(|| panic!("no row {name}"));
    f(row);
}

#[test]
fn the_per_forward_goal_follows_its_best_row() {
    let mut rows = rows();
    let before = report::goals(&rows, true);
    assert_eq!(goal(&before, "per-forward").met, Some(false));
    set(&mut rows, "lossless/per-forward/device/pf-on", |r| r.decode_vs_dense = Some(0.85));
    let after = report::goals(&rows, true);
    let g = goal(&after, "per-forward");
    assert_eq!(g.met, Some(true));
    assert_eq!(g.config, "lossless/per-forward/device/pf-on");
}

#[test]
fn the_offload_goals_count_only_host_rows_with_prefetch_that_keep_weights_compressed() {
    let mut rows = rows();
    // Start every row below both targets, whatever the committed run measured.
    for r in rows.iter_mut() {
        r.decode_vs_plain = Some(1.0);
    }
    // `full` and device residency do not count, however fast.
    set(&mut rows, "lossless/full/host/pf-on", |r| r.decode_vs_plain = Some(9.0));
    set(&mut rows, "lossless/adaptive/device/pf-on", |r| r.decode_vs_plain = Some(9.0));
    // Nor does a row without prefetch; it is reported beside the figure.
    set(&mut rows, "lossless/none/host/pf-off", |r| r.decode_vs_plain = Some(8.0));
    let g = report::goals(&rows, true);
    let lossless = goal(&g, "host-resident lossless");
    assert_eq!(lossless.met, Some(false), "{}", lossless.measured);
    assert!(lossless.config.contains("/host/pf-on"), "{}", lossless.config);
    assert!(lossless.measured.contains("8.00×"), "{}", lossless.measured);

    set(&mut rows, "lossless/none/host/pf-on", |r| r.decode_vs_plain = Some(1.41));
    let g = report::goals(&rows, true);
    assert_eq!(goal(&g, "host-resident lossless").met, Some(true));
    assert_eq!(goal(&g, "host-resident int8").met, Some(false));

    rows.retain(|r| !(r.scheme == "int8" && r.prefetch));
    let g = report::goals(&rows, true);
    assert_eq!(goal(&g, "host-resident int8").met, None, "no row: not measured, not failed");
}

#[test]
fn the_cpu_explanation_blames_prefetch_only_where_it_cost_speed() {
    let mut rows = rows();
    for r in rows.iter_mut() {
        r.decode_vs_plain = Some(1.0);
    }
    set(&mut rows, "lossless/none/host/pf-off", |r| r.decode_vs_plain = Some(1.2));
    let g = report::goals(&rows, false);
    let why = &goal(&g, "host-resident lossless").why;
    assert!(why.contains("prefetch competes"), "{why}");
    set(&mut rows, "lossless/none/host/pf-on", |r| r.decode_vs_plain = Some(1.3));
    let g = report::goals(&rows, false);
    let why = &goal(&g, "host-resident lossless").why;
    assert!(!why.contains("prefetch competes") && why.starts_with("7% short"), "{why}");
    assert!(why.contains("prefetch overlaps"), "{why}");
}

#[test]
fn the_none_memory_goal_bounds_the_worst_none_row() {
    let mut rows = rows();
    assert_eq!(goal(&report::goals(&rows, false), "`none`").met, Some(true));
    let dense = rows.iter().find(|r| r.name == "dense").cloned().unwrap();
    let non_weight = dense.device_peak_bytes - dense.weight_bytes;
    set(&mut rows, "int4/none/device/pf-off", |r| {
        r.device_peak_bytes = non_weight + r.compressed_bytes + r.two_largest_decoded_bytes + (1 << 20)
    });
    let g = report::goals(&rows, false);
    let none = goal(&g, "`none`");
    assert_eq!(none.met, Some(false));
    assert_eq!(none.config, "int4/none/device/pf-off");
    assert!(none.why.starts_with("1 MiB over"), "{}", none.why);
}

#[test]
fn failed_rows_are_ignored_by_the_goals() {
    let mut rows = rows();
    set(&mut rows, "lossless/per-forward/host/pf-off", |r| {
        r.decode_vs_dense = Some(5.0);
        r.error = Some("killed".into());
    });
    let g = report::goals(&rows, true);
    assert_ne!(goal(&g, "per-forward").config, "lossless/per-forward/host/pf-off");
}

#[test]
fn the_chart_is_written_atomically_as_svg() {
    let report = committed("cpu-smollm2");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chart.svg");
    report::svg(&report, &path).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
    assert!(svg.contains("decode tokens/s"), "axis label missing");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "temp files left: {leftovers:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "the chart kept the temporary file's private mode");
    }
}
