//! `cgtrace top`: the live screen, or a recording stepped through
//! interval by interval. The terminal is put in raw mode on the alternate
//! screen and given back as it was on `q`, Ctrl-C, SIGTERM, an error and
//! a panic alike.

use std::{
    io::{self, IsTerminal as _},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Args;
use crossterm::{
    event::{self as terminal_event, Event as TerminalEvent},
    execute,
    terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode},
};
use ratatui::{Terminal, backend::CrosstermBackend};

use super::{Outcome, charges::ChargesArgs};
use crate::{
    identity::selection::{SelectArgs, Selection},
    model::top::Detail,
    privilege,
    probe::{FeatureSet, ProbeOptions},
    session::{self, Context, FileSamples, LiveOptions, Source as _, TraceSource},
    system::Clock,
    view::{
        format::short_time,
        top::{
            TopSink, lines, notes,
            render::{self, Screen},
            replay::Replay,
            state::{Action, UiState},
        },
    },
};

/// Refresh every second unless told otherwise.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Time between refreshes: `1s`, `500ms`, `2s` (live only).
    #[arg(long, value_parser = crate::units::parse_duration)]
    pub interval: Option<Duration>,
    /// Step through a recording (a trace file, or a flight recorder's
    /// directory or snapshot) instead of watching this machine.
    #[arg(long, value_name = "TRACE")]
    pub input: Option<PathBuf>,
    #[command(flatten)]
    pub charges: ChargesArgs,
    #[command(flatten)]
    pub select: SelectArgs,
}

pub fn run(args: &TopArgs) -> anyhow::Result<Outcome> {
    if !io::stdout().is_terminal() || !io::stdin().is_terminal() {
        bail!(
            "cgtrace top needs a terminal; without one, use the other views: `cgtrace cache`, `reclaim`, `throttle`, `oom --follow` (each with --json), or `serve`"
        );
    }
    let selection = Selection::new(&args.select)?;
    match &args.input {
        Some(path) => replay(path, selection),
        None => live(args, selection),
    }
}

/// The terminal in raw mode on the alternate screen, given back on drop.
struct Screenful {
    terminal: Terminal<CrosstermBackend<io::Stdout>>,
}

impl Screenful {
    fn open() -> anyhow::Result<Self> {
        // A panic gives the terminal back before its message is printed.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        enable_raw_mode().context("cannot put the terminal in raw mode")?;
        execute!(io::stdout(), EnterAlternateScreen).context("cannot use the alternate screen")?;
        let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
        terminal.hide_cursor()?;
        terminal.clear()?;
        Ok(Self { terminal })
    }
}

impl Drop for Screenful {
    fn drop(&mut self) {
        let _ = self.terminal.show_cursor();
        restore();
    }
}

fn restore() {
    // The cursor is shown again on the main screen itself: leaving the
    // alternate screen does not restore its visibility everywhere.
    let _ = execute!(io::stdout(), LeaveAlternateScreen, crossterm::cursor::Show);
    let _ = disable_raw_mode();
    notes::release();
}

/// What cgtrace said while the screen was up, said again once it is gone.
#[derive(Default)]
struct Said {
    all: Vec<String>,
}

impl Said {
    fn push(&mut self, note: String) {
        self.all.push(note);
    }

    fn latest(&self) -> Option<&str> {
        self.all.last().map(String::as_str)
    }

    /// After the screen: stderr is stderr again.
    fn repeat(mut self, mut notes: notes::Notes) {
        restore();
        // Lines still in the pipe when it was given back.
        std::thread::sleep(Duration::from_millis(20));
        while let Ok(note) = notes.try_recv() {
            self.all.push(note);
        }
        for note in &self.all {
            crate::note!("{note}");
        }
    }
}

/// This machine, live: every probe family, the files of the cgroups they
/// name each interval, and every memory cgroup's usage every few.
fn live(args: &TopArgs, selection: Selection) -> anyhow::Result<Outcome> {
    let interval = args.interval.unwrap_or(DEFAULT_INTERVAL);
    let (mut source, mut cx) = super::live::start(
        selection,
        &ProbeOptions {
            features: args.charges.features(FeatureSet::ALL),
            ..ProbeOptions::default()
        },
        |_, _| {
            Ok(LiveOptions {
                interval,
                files: FileSamples {
                    memory: true,
                    cpu: true,
                    pressure: true,
                    cpu_usage: false,
                },
                gate_throttle: true,
                // Quiet cgroups' usage, limit and CFS counters too, less
                // often: the busy ones are read every interval.
                sweep: Some(interval.max(SWEEP_AT_LEAST)),
                quiet_quotas_on_sweep: true,
                ..LiveOptions::default()
            })
        },
    )?;
    super::live::give_up_privileges(privilege::kept_by("top"))?;
    let mut sink = TopSink::new(cx.page_size, false);
    let mut notes = notes::capture().context("cannot take stderr while the screen is up")?;
    let mut said = Said::default();
    let mut screen = Screenful::open()?;
    let mut state = UiState::default();
    let keys = read_keys();
    let mode = format!("live, every {}", humantime(interval));
    let runtime = session::runtime()?;
    let result = runtime.block_on(async {
        let mut keys = keys;
        let mut running = true;
        while running {
            let redraw = tokio::select! {
                event = source.next(&mut cx) => {
                    let Some(event) = event? else { break };
                    session::deliver(&event, &mut cx, &mut [&mut sink])?;
                    std::mem::take(&mut sink.fresh)
                }
                input = keys.recv() => {
                    let Some(input) = input else { break };
                    match handle(&input, &mut state, &sink, 0, &mut cx) {
                        Action::Quit => {
                            running = false;
                            false
                        }
                        Action::None => false,
                        _ => true,
                    }
                }
                Some(note) = notes.recv() => {
                    said.push(note);
                    true
                }
            };
            if redraw {
                draw(
                    &mut screen,
                    &mut state,
                    &sink,
                    0,
                    &mode,
                    said.latest(),
                    &mut cx,
                )?;
            }
        }
        anyhow::Ok(())
    });
    drop(screen);
    said.repeat(notes);
    result?;
    Ok(Outcome::Success)
}

/// How often a live screen reads every quiet cgroup's memory usage and
/// CFS counters (the busy ones are read every interval).
const SWEEP_AT_LEAST: Duration = Duration::from_secs(30);

/// A recording, interval by interval: ← → step, space plays. Snapshots
/// are made as the screen reaches them ([`Replay`]).
fn replay(path: &std::path::Path, selection: Selection) -> anyhow::Result<Outcome> {
    let header = TraceSource::open(path)?.header().clone();
    let mut cx = Context::new(
        selection,
        Clock::from_boot_time(header.boot_time_ns),
        header.page_size,
    );
    let mut replay = Replay::open(path, &mut cx)?;
    let mut notes = notes::capture().context("cannot take stderr while the screen is up")?;
    let mut said = Said::default();
    let mut screen = Screenful::open()?;
    let mut state = UiState::default();
    let mut at = 0_usize;
    let mut playing = false;
    let mut next_step = Instant::now();
    // A step behind the kept snapshots, shown as such before reading.
    let mut reread: Option<usize> = None;
    loop {
        while let Ok(note) = notes.try_recv() {
            said.push(note);
        }
        let count = replay
            .count()
            .map_or_else(|| "…".to_owned(), |count| count.to_string());
        let mode = if let Some(target) = reread {
            format!(
                "replay {}/{count}, reading the recording again from its start for {}",
                at + 1,
                target + 1
            )
        } else {
            format!(
                "replay {}/{count}{}",
                at + 1,
                if playing {
                    ", playing"
                } else {
                    ", paused (space plays)"
                }
            )
        };
        let local = at - replay.first();
        draw(
            &mut screen,
            &mut state,
            replay.sink(),
            local,
            &mode,
            said.latest(),
            &mut cx,
        )?;
        if let Some(target) = reread.take() {
            at = replay.seek(target, &mut cx)?.unwrap_or(0);
            continue;
        }
        let wait = if playing {
            next_step.saturating_duration_since(Instant::now())
        } else {
            Duration::from_hours(1)
        };
        let target = if terminal_event::poll(wait)? {
            let input = terminal_event::read()?;
            match handle(&input, &mut state, replay.sink(), local, &mut cx) {
                Action::Quit => break,
                Action::Step(by) => step(at, by),
                Action::TogglePlay => {
                    playing = !playing;
                    next_step = Instant::now() + PLAY_STEP;
                    at
                }
                Action::Redraw | Action::None => at,
            }
        } else if playing {
            next_step = Instant::now() + PLAY_STEP;
            at + 1
        } else {
            at
        };
        if replay.is_behind(target) {
            // Say so first: reading a long recording again takes a while.
            reread = Some(target);
            continue;
        }
        at = replay.seek(target, &mut cx)?.unwrap_or(0);
        playing &= replay.count().is_none_or(|count| at + 1 < count);
    }
    drop(screen);
    said.repeat(notes);
    Ok(Outcome::Success)
}

/// A replay plays one interval per second.
const PLAY_STEP: Duration = Duration::from_secs(1);

/// The interval `by` steps from `at` (never before the first).
fn step(at: usize, by: i64) -> usize {
    let target = i64::try_from(at).unwrap_or(0).saturating_add(by);
    usize::try_from(target.max(0)).unwrap_or(0)
}

/// Applies a terminal event to the screen's state.
fn handle(
    input: &TerminalEvent,
    state: &mut UiState,
    sink: &TopSink,
    at: usize,
    cx: &mut Context,
) -> Action {
    match input {
        TerminalEvent::Key(key) => {
            let shown = shown_lines(state, sink, at, cx);
            state.key(*key, &shown)
        }
        TerminalEvent::Resize(..) => Action::Redraw,
        _ => Action::None,
    }
}

/// The lines of snapshot `at` as the state wants them.
fn shown_lines<'a>(
    state: &UiState,
    sink: &'a TopSink,
    at: usize,
    cx: &mut Context,
) -> Vec<lines::Line<'a>> {
    let Some(snapshot) = sink.snapshots.get(at) else {
        return Vec::new();
    };
    lines::lines(
        &snapshot.rows,
        &mut |path| cx.selection.identify(path),
        state.grouping,
        &state.expanded,
        &state.filter,
        state.sort,
        state.reverse,
    )
}

fn draw(
    screen: &mut Screenful,
    state: &mut UiState,
    sink: &TopSink,
    at: usize,
    mode: &str,
    note: Option<&str>,
    cx: &mut Context,
) -> anyhow::Result<()> {
    let shown = shown_lines(state, sink, at, cx);
    let snapshot = sink.snapshots.get(at);
    // A cgroup with nothing to detail has an empty pane.
    let empty = Detail::default();
    let detail = state.detail.then(|| {
        state
            .selected_index(&shown)
            .and_then(|i| shown.get(i))
            .and_then(|line| snapshot?.details.get(line.path))
            .unwrap_or(&empty)
    });
    let clock = cx.clock;
    let time = snapshot.map_or_else(
        || "waiting for the first interval".to_owned(),
        |s| short_time(clock.wall_time(s.end_ns)),
    );
    let kill_time = move |ns: u64| short_time(clock.wall_time(ns));
    let losses = crate::view::top::losses(sink.health.as_ref());
    let view = Screen {
        time,
        mode: mode.to_owned(),
        lines: &shown,
        detail,
        now_ns: snapshot.map_or(0, |s| s.end_ns),
        kill_time: &kill_time,
        losses,
        note,
    };
    screen
        .terminal
        .draw(|frame| render::draw(frame, state, &view))?;
    Ok(())
}

/// Keys (and resizes) from a thread of their own: reading the terminal
/// blocks, and the session's loop must not.
fn read_keys() -> tokio::sync::mpsc::UnboundedReceiver<TerminalEvent> {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while let Ok(input) = terminal_event::read() {
            if sender.send(input).is_err() {
                break;
            }
        }
    });
    receiver
}

fn humantime(interval: Duration) -> String {
    if interval.subsec_millis() == 0 {
        format!("{}s", interval.as_secs())
    } else {
        format!("{}ms", interval.as_millis())
    }
}
