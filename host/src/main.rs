use tracing_subscriber::EnvFilter;

/// Allocations this large or larger are mapped and unmapped on their own.
/// glibc raises its threshold to the largest block freed (up to 32 MiB),
/// after which the 1 MiB buffers of reads stay in each thread's arena: a
/// tar of the bench's /usr tree peaked at 81 MiB with the moving threshold
/// and 43 MiB with this fixed one (glibc's default start, 128 KiB), and
/// used less CPU (12 s against 17 s).
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

fn main() -> std::process::ExitCode {
    // SAFETY: mallopt only sets an allocator parameter; called first, on
    // one thread.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
    // Called by mount(8) as /sbin/mount.fshost: become `fshost mount`.
    if std::env::args_os().next().is_some_and(|a| fshost::mount_helper::is_helper(&a)) {
        return fshost::mount_helper::main().unwrap_or_else(|e| {
            eprintln!("{}: {}", fshost::mount_helper::NAME, fshost::report::message(&e));
            // mount(8): 1 is "incorrect invocation or permissions".
            std::process::ExitCode::FAILURE
        });
    }
    let cli = fshost::cli::Cli::from_args();
    let default = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match fshost::cli::run(cli) {
        Ok(code) => code,
        // A reader that closed our stdout (`fshost ls ... | head -1`) has
        // what it wanted: end quietly, as ls, cat and ripgrep do.
        Err(e) if fshost::report::is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fshost: {}", fshost::report::message(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
