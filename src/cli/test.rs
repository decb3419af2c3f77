use super::{EXIT_FAILED, EXIT_OK, Global};
use crate::engine::testing;

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Only this pipeline's tests
    pub pipeline: Option<String>,
    /// Only tests whose name contains this text
    #[arg(long)]
    pub filter: Option<String>,
}

pub async fn run(g: &Global, a: &TestArgs) -> anyhow::Result<u8> {
    let project = match super::load_project(g)? {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let settings = serde_json::Value::Object(project.config.settings.clone());
    let (mut passed, mut failed) = (0usize, 0usize);
    for p in &project.pipelines {
        if a.pipeline.as_ref().is_some_and(|n| n != &p.name) {
            continue;
        }
        for t in &p.tests {
            if a.filter
                .as_ref()
                .is_some_and(|f| !t.name.contains(f.as_str()))
            {
                continue;
            }
            let outcome = testing::run_test(p, t, &settings).await;
            if outcome.passed() {
                passed += 1;
                println!("ok    {} › {}", p.name, t.name);
            } else {
                failed += 1;
                println!("FAIL  {} › {}", p.name, t.name);
                for f in &outcome.failures {
                    for line in f.lines() {
                        println!("      {line}");
                    }
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 { EXIT_OK } else { EXIT_FAILED })
}
