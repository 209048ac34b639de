//! A small chaos run in CI: link cuts and an engine restart on its journal, over mutual TLS as
//! by default, and still every task reaches a final outcome exactly once.

use std::time::Duration;

use turbomon::chaos::{ChaosOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tasks_survive_cuts_and_an_engine_restart_with_nothing_lost_or_run_twice() {
    let report = run(ChaosOptions {
        tasks: 1000,
        link: "lossy-wan".to_string(),
        cuts: 5,
        engine_restarts: 1,
        seed: 7,
        max_time: Duration::from_secs(120),
        plaintext: false,
        engine_program: Some(env!("CARGO_BIN_EXE_turbomon").into()),
    })
    .await
    .expect("chaos run");
    assert_eq!(report.cuts, 5);
    assert_eq!(report.engine_restarts, 1);
    assert_eq!(report.lost, 0, "{report:?}");
    assert_eq!(report.duplicated, 0, "{report:?}");
    assert_eq!(report.completed, 1000);
    assert_eq!(
        report.notices_missed, 0,
        "the duplicate count saw every completion"
    );
}

#[tokio::test]
async fn chaos_refuses_bad_options_naming_the_flag() {
    let error = run(ChaosOptions {
        link: "moon".to_string(),
        ..ChaosOptions::default()
    })
    .await
    .expect_err("unknown link refused");
    assert!(error.to_string().starts_with("--link"), "{error}");
    let error = run(ChaosOptions {
        tasks: 0,
        ..ChaosOptions::default()
    })
    .await
    .expect_err("zero tasks refused");
    assert!(error.to_string().starts_with("--tasks"), "{error}");
}
