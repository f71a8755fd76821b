//! The `calibscope` binary: parse arguments, run the library, print, set the exit status.
//! Exit status: 0 all inputs analysed; 1 some inputs failed; 2 usage error;
//! 3 `--fail-on` matched a warning.

mod cli;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, FromArgMatches};

use calibscope::analysis::compare::{self, Comparison, FailOn};
use calibscope::analysis::saved::{self, Saved};
use calibscope::analysis::warnings::WarningKind;
use calibscope::analysis::{Analysis, Options, Progress, analyze};
use calibscope::report::{self, Format, export, write};
use calibscope::source::{Discovery, discover};
use cli::{AnalysisArgs, Cli, Command, CompareArgs, ExportKind, FormatArg, MergeArgs, ReportArgs};

fn main() -> ExitCode {
    keep_freed_memory();
    let matches = Cli::command().get_matches();
    let cli =
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut Cli::command()).exit());
    let given = cli::given_options(&matches);
    let result = cli::refused_in_compare(&matches)
        .map_err(anyhow::Error::new)
        .and_then(|()| run(cli, &given));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            // A usage error exits 2, as clap's own do; any other failure 1.
            ExitCode::from(if e.is::<cli::UsageError>() { 2 } else { 1 })
        }
    }
}

/// Each layer allocates and frees a few MiB of histograms. glibc hands blocks that large back
/// to the kernel on free, so every layer of a folder would pay page faults and zeroing for
/// fresh pages; keeping freed memory in the heap reuses it. Peak RSS is unchanged (the same
/// blocks are reused, not added).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

/// `given`: the analysis options given on the command line (clap ids).
fn run(cli: Cli, given: &[&str]) -> Result<ExitCode> {
    match cli.command {
        Some(Command::Report(args)) => report_command(*args, given),
        Some(Command::Compare(args)) => compare_command(args, &cli.run.analysis),
        Some(Command::Merge(args)) => merge_command(args),
        None => {
            let args = cli.run;
            setup_threads(&args.analysis)?;
            if std::io::stdout().is_terminal() {
                if let Some((_, saved)) = open_saved(&args.paths)? {
                    let opts = args
                        .analysis
                        .options_over(saved.options(&defaults()), given)?;
                    let rerun = saved::needs_rerun(&saved, &opts);
                    let fit = saved::profiles_fit(&saved.analysis.settings, &opts);
                    calibscope::tui::run_saved(saved.into_slots(), opts, rerun, fit)?;
                    return Ok(ExitCode::SUCCESS);
                }
                let (opts, found) = prepare(&args.paths, &args.analysis)?;
                calibscope::tui::run(found.layers, found.errors, opts)?;
                Ok(ExitCode::SUCCESS)
            } else {
                report_command(
                    ReportArgs {
                        paths: args.paths,
                        format: FormatArg::Text,
                        quiet: true,
                        fail_on: None,
                        export: None,
                        method: "recommended".into(),
                        trt_header: export::TRT_HEADER.into(),
                        name_map: None,
                        save: None,
                        shard: None,
                        analysis: args.analysis,
                    },
                    given,
                )
            }
        }
    }
}

fn setup_threads(a: &AnalysisArgs) -> Result<()> {
    if let Some(n) = a.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build_global()
            .context("could not start the worker threads")?;
    }
    Ok(())
}

/// Options and the layers to analyse (the bundled samples when no path is given).
fn prepare(paths: &[PathBuf], a: &AnalysisArgs) -> Result<(Options, Discovery)> {
    let opts = a.options()?;
    let paths = if paths.is_empty() {
        vec![calibscope::samples::extract().context("could not unpack the bundled samples")?]
    } else {
        paths.to_vec()
    };
    let found = discover(&paths, a.layout(), &opts.limits);
    Ok((opts, found))
}

fn defaults() -> Options {
    Options::default()
}

/// The saved analysis among `paths`, read and checked (it must be the only path).
fn open_saved(paths: &[PathBuf]) -> Result<Option<(PathBuf, Saved)>> {
    let Some(path) = paths.iter().find(|p| saved::is_saved(p)) else {
        return Ok(None);
    };
    if paths.len() > 1 {
        return Err(cli::UsageError(format!(
            "{} is a saved analysis: open it on its own (merge joins the parts of a sharded run)",
            path.display()
        ))
        .into());
    }
    Ok(Some((path.clone(), saved::read(path)?)))
}

/// `calibscope report`: analyse the dumps (or open a saved analysis, re-running it when the
/// command line changes its settings), print, export, save; the exit status.
fn report_command(args: ReportArgs, given: &[&str]) -> Result<ExitCode> {
    setup_threads(&args.analysis).ok();
    let fail_on = args.fail_on()?;
    let export_to = args.export()?;
    let names = args.name_map()?;
    let shard = args.shard()?;
    let saving = args.save.is_some();
    let (saved, inputs) = match open_saved(&args.paths)? {
        Some((path, old)) => {
            if shard.is_some() {
                return Err(cli::UsageError(format!(
                    "--shard splits the dumps of a run; {} is already analysed",
                    path.display()
                ))
                .into());
            }
            let mut opts = args
                .analysis
                .options_over(old.options(&defaults()), given)?;
            opts.keep_profiles = saving;
            let inputs: Vec<PathBuf> = std::iter::once(path.as_path())
                .chain(old.input_files())
                .map(Path::to_path_buf)
                .collect();
            let saved = if saved::needs_rerun(&old, &opts) {
                let n = old.layers.len();
                let analysis = with_progress(args.quiet, n, |progress| {
                    saved::rerun(&old, &opts, progress)
                })?;
                let specs = old.layers.iter().map(|l| l.spec.clone()).collect();
                let positions = old.layers.iter().map(|l| l.position).collect();
                Saved::new(analysis, specs, positions, old.inputs, old.shard)
            } else {
                old
            };
            (saved, inputs)
        }
        None => {
            let (mut opts, found) = prepare(&args.paths, &args.analysis)?;
            opts.keep_profiles = saving;
            let (k, n) = shard.unwrap_or((0, 1));
            let part = saved::shard::part(&found.layers, &found.errors, k, n);
            let analysis = with_progress(args.quiet, part.specs.len(), |progress| {
                analyze(&part.specs, &part.errors, &opts, progress)
            })?;
            let inputs: Vec<PathBuf> = (args.paths.iter().map(PathBuf::as_path))
                .chain(write::input_files(&found.layers))
                .chain(found.errors.iter().map(|e| Path::new(&e.path)))
                .map(Path::to_path_buf)
                .collect();
            let specs = (part.specs.into_iter().map(Some))
                .chain(part.errors.iter().map(|_| None))
                .collect();
            let saved = Saved::new(
                analysis,
                specs,
                part.positions,
                args.paths.clone(),
                part.shard,
            );
            (saved, inputs)
        }
    };
    let analysis = &saved.analysis;
    print(report::render(analysis, format_of(args.format)).as_bytes())?;
    let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();

    if let Some((kind, file)) = &export_to {
        let contents = match kind {
            ExportKind::TrtCache => {
                export::trt_cache(analysis, &args.method, &args.trt_header, &names)
            }
            ExportKind::Ort => export::ort_cache(analysis, &args.method, &names),
            ExportKind::Json => export::ranges_json(analysis, &args.method, &names),
        }
        .map_err(anyhow::Error::msg)?;
        write::write_atomic(file, contents.as_bytes(), &inputs)?;
    }
    if let Some(file) = &args.save {
        let bytes = saved::encode(&saved).map_err(anyhow::Error::msg)?;
        write::write_atomic(file, &bytes, &inputs)?;
    }
    Ok(status(analysis, fail_on))
}

/// `calibscope merge PART...`: the parts of a sharded run as one analysis.
fn merge_command(args: MergeArgs) -> Result<ExitCode> {
    use rayon::prelude::*;
    let parts = args
        .parts
        .par_iter()
        .map(|p| saved::read(p).map(|s| (p.display().to_string(), s)))
        .collect::<Result<Vec<_>, _>>()?;
    let merged = saved::merge(parts).map_err(anyhow::Error::msg)?;
    if args.format.is_some() || args.save.is_none() {
        let format = format_of(args.format.unwrap_or(FormatArg::Text));
        print(report::render(&merged.analysis, format).as_bytes())?;
    }
    if let Some(file) = &args.save {
        let inputs: Vec<&Path> = (args.parts.iter().map(PathBuf::as_path))
            .chain(merged.input_files())
            .collect();
        let bytes = saved::encode(&merged).map_err(anyhow::Error::msg)?;
        write::write_atomic(file, &bytes, &inputs)?;
    }
    Ok(status(&merged.analysis, None))
}

/// 1 when a layer failed (each printed on stderr), 3 when `--fail-on` matched, else 0.
fn status(analysis: &Analysis, fail_on: Option<Vec<WarningKind>>) -> ExitCode {
    let failed = analysis.layers.iter().any(|l| l.error.is_some());
    if failed {
        for l in analysis.layers.iter().filter(|l| l.error.is_some()) {
            eprintln!("error: {}", l.error.as_deref().unwrap_or(""));
        }
        return ExitCode::from(1);
    }
    if let Some(kinds) = fail_on {
        let hit = analysis
            .layers
            .iter()
            .flat_map(|l| &l.warnings)
            .any(|w| kinds.is_empty() || kinds.contains(&w.kind));
        if hit {
            return ExitCode::from(3);
        }
    }
    ExitCode::SUCCESS
}

fn format_of(f: FormatArg) -> Format {
    match f {
        FormatArg::Text => Format::Text,
        FormatArg::Json => Format::Json,
        FormatArg::Csv => Format::Csv,
        FormatArg::Markdown => Format::Markdown,
    }
}

/// `calibscope compare REF TEST`: the compare view in a terminal (unless --format), else the
/// report. Exit 1 when a pair failed or no layer is on both sides, 3 when --fail-on matched.
fn compare_command(args: CompareArgs, shared: &AnalysisArgs) -> Result<ExitCode> {
    setup_threads(shared).ok();
    let opts = args.options(shared)?;
    let fail_on = args.fail_on()?;
    let pairing = compare::pair_up(&args.reference, &args.test, &opts);
    let nothing = pairing.pairs.is_empty().then(|| {
        format!(
            "nothing to compare: no layer name is in both {} ({} layers) and {} ({} layers)",
            args.reference.display(),
            pairing.reference_only.len(),
            args.test.display(),
            pairing.test_only.len()
        )
    });
    if args.format.is_none() && nothing.is_none() && std::io::stdout().is_terminal() {
        calibscope::tui::run_compare(pairing, opts)?;
        return Ok(ExitCode::SUCCESS);
    }
    let opts = compare::CompareOptions {
        keep_histograms: false,
        ..opts
    };
    let result = with_progress(args.quiet, pairing.pairs.len(), |progress| {
        compare::compare(&pairing, &opts, progress)
    })?;
    let format = format_of(args.format.unwrap_or(FormatArg::Text));
    print(report::compare::render(&result, format).as_bytes())?;
    compare_status(&result, &fail_on, nothing)
}

fn compare_status(c: &Comparison, fail_on: &[FailOn], nothing: Option<String>) -> Result<ExitCode> {
    let mut failed = false;
    for p in c.failed() {
        eprintln!("error: {}: {}", p.name, p.error.as_deref().unwrap_or(""));
        failed = true;
    }
    if let Some(msg) = nothing {
        eprintln!("error: {msg}");
        failed = true;
    }
    if failed {
        return Ok(ExitCode::from(1));
    }
    let hit = c.pairs.iter().any(|p| fail_on.iter().any(|k| k.hits(p)));
    Ok(if hit {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

/// Writes the report to stdout. A reader that went away (`| head`) is not an error; any other
/// failure (a full disk, `> /dev/full`) is, so a report is never lost silently.
fn print(bytes: &[u8]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => bail!(
            "cannot write the report to standard output: {}",
            write::describe(&e)
        ),
        _ => Ok(()),
    }
}

/// Runs `work` on a worker thread while the main thread draws a progress bar on stderr (only
/// when stderr is a terminal and not `--quiet`); `items`: layers or pairs to go through.
fn with_progress<T: Send>(
    quiet: bool,
    items: usize,
    work: impl FnOnce(&Progress) -> T + Send,
) -> Result<T> {
    let progress = Progress::default();
    let show = !quiet && std::io::stderr().is_terminal();
    std::thread::scope(|s| {
        let worker = s.spawn(|| work(&progress));
        if show {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {bar:40} {percent:>3}% {msg} ({elapsed})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            while !worker.is_finished() {
                bar.set_length(progress.total.load(Ordering::Relaxed).max(1));
                bar.set_position(progress.done.load(Ordering::Relaxed));
                bar.set_message(format!(
                    "{}/{} layers",
                    progress.layers_done.load(Ordering::Relaxed),
                    items
                ));
                std::thread::sleep(Duration::from_millis(80));
            }
            bar.finish_and_clear();
        }
        // Layers catch their own panics; one outside them is a bug, never an empty report.
        worker.join().map_err(|_| {
            anyhow::anyhow!("the analysis failed unexpectedly (a bug: please report it)")
        })
    })
}
