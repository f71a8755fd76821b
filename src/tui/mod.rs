//! The interactive terminal UI (being built).

// Placeholder until the UI lands (the TUI work replaces this whole file): prints the report.
pub fn run(
    specs: Vec<crate::source::LayerSpec>,
    errors: Vec<crate::source::LoadError>,
    opts: crate::analysis::Options,
) -> anyhow::Result<()> {
    let a = crate::analysis::analyze(&specs, &errors, &opts, &Default::default());
    println!("(the terminal UI is not built yet; showing the report)");
    print!("{}", crate::report::render(&a, crate::report::Format::Text));
    Ok(())
}
