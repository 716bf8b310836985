//! Drawing one screen: a title line, the table (as many columns as the
//! width holds, the most telling first), the detail pane, the help, and a
//! status line. Pure: it draws into whatever buffer ratatui gives it.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line as TextLine, Span},
    widgets::{
        Block, Borders, Cell, Clear, Paragraph, Row as TableRow, Sparkline, Table, TableState,
    },
};

use super::{
    lines::{Column, Line},
    state::UiState,
};
use crate::{
    model::top::{Detail, Kill, Row},
    view::format::bytes,
};

/// How long a new OOM kill stays highlighted.
pub const KILL_HIGHLIGHT_NS: u64 = 30_000_000_000;

/// What the screen shows besides the lines.
pub struct Screen<'a> {
    /// The interval's end as the title shows it (UTC).
    pub time: String,
    /// "live, every 1s" or "replay 3/120, paused".
    pub mode: String,
    pub lines: &'a [Line<'a>],
    /// The selected line's detail, when the pane is open.
    pub detail: Option<&'a Detail>,
    /// The snapshot's end (`CLOCK_MONOTONIC` ns), to age kills by.
    pub now_ns: u64,
    /// Formats a kill's time.
    pub kill_time: &'a dyn Fn(u64) -> String,
    /// The losses line ("0 drops, 0 misses").
    pub losses: String,
    /// The latest thing cgtrace said (on stderr, without a screen).
    pub note: Option<&'a str>,
}

/// Columns in the order they give way when the screen is narrow (the last
/// goes first), and their widths.
const COLUMNS: [(Column, u16); 11] = [
    (Column::Memory, 20),
    (Column::OomKills, 4),
    (Column::Throttled, 5),
    (Column::Cache, 7),
    (Column::Evicted, 8),
    (Column::Quota, 6),
    (Column::ThrottledMs, 8),
    (Column::EvictedByOthers, 9),
    (Column::Refaults, 8),
    (Column::StallP99, 8),
    (Column::Pressure, 6),
];

/// The narrowest the name column gets before other columns give way.
const NAME_MIN: u16 = 30;

/// The columns that fit in `width`, in display order, with their widths.
#[must_use]
pub fn fitting_columns(width: u16) -> Vec<(Column, u16)> {
    let mut shown: Vec<(Column, u16)> = Vec::new();
    let mut used = NAME_MIN;
    for (column, w) in COLUMNS {
        if used + w < width {
            used += w + 1;
            shown.push((column, w));
        }
    }
    // Display order is the sort order of ALL, not of giving way.
    shown.sort_by_key(|(c, _)| Column::ALL.iter().position(|a| a == c));
    shown
}

/// Draws the whole screen.
pub fn draw(frame: &mut Frame<'_>, state: &UiState, screen: &Screen<'_>) {
    let area = frame.area();
    let detail_height = if screen.detail.is_some() {
        (area.height / 2).clamp(8, 14)
    } else {
        0
    };
    let [title, table, detail, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(detail_height),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_title(frame, title, state, screen);
    draw_table(frame, table, state, screen);
    if let Some(d) = screen.detail {
        let label = state
            .selected_index(screen.lines)
            .and_then(|i| screen.lines.get(i))
            .map_or_else(String::new, |l| l.label.trim().to_owned());
        draw_detail(frame, detail, &label, d, screen);
    }
    draw_status(frame, status, state, screen);
    if state.help {
        draw_help(frame, area);
    }
}

fn draw_title(frame: &mut Frame<'_>, area: Rect, state: &UiState, screen: &Screen<'_>) {
    let order = if state.reverse { "▲" } else { "▼" };
    let mut spans = vec![
        Span::styled("cgtrace top", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!("  {}  {}  ", screen.time, screen.mode)),
        Span::raw(format!(
            "{} lines  sort {} {order}",
            screen.lines.len(),
            state.sort.title()
        )),
    ];
    if !state.filter.is_empty() {
        spans.push(Span::styled(
            format!("  filter {}", printable(&state.filter)),
            Style::new().fg(Color::Yellow),
        ));
    }
    frame.render_widget(Paragraph::new(TextLine::from(spans)), area);
}

fn draw_table(frame: &mut Frame<'_>, area: Rect, state: &UiState, screen: &Screen<'_>) {
    let columns = fitting_columns(area.width);
    let name_width = area
        .width
        .saturating_sub(columns.iter().map(|(_, w)| w + 1).sum::<u16>());
    let heading = |column: Column| {
        let mut style = Style::new().add_modifier(Modifier::BOLD);
        if column == state.sort {
            style = style.add_modifier(Modifier::REVERSED);
        }
        Cell::from(column.title()).style(style)
    };
    let header = TableRow::new(
        std::iter::once(heading(Column::Name)).chain(columns.iter().map(|(c, _)| heading(*c))),
    );
    // Only the lines that fit are made into cells: beside thousands of
    // cgroups, formatting them all each refresh would be most of the cost.
    let visible = usize::from(area.height.saturating_sub(1)).max(1);
    let selected = state.selected_index(screen.lines);
    let first = selected.map_or(0, |s| s.saturating_sub(visible - 1));
    let window = &screen.lines[first.min(screen.lines.len())..];
    let rows = window.iter().take(visible).map(|line| {
        let killed_lately = line
            .row
            .last_kill_ns
            .is_some_and(|at| screen.now_ns.saturating_sub(at) < KILL_HIGHLIGHT_NS);
        let mut label = printable(&line.label);
        if line.expandable {
            label = format!(
                "{}{label}",
                if state.expanded.contains(&line.label) {
                    "▾ "
                } else {
                    "▸ "
                }
            );
        }
        if line.row.gone {
            label.push_str(" (gone)");
        }
        let cells = std::iter::once(Cell::from(tail(&label, name_width as usize))).chain(
            columns
                .iter()
                .map(|(column, width)| cell(*column, &line.row, *width, killed_lately)),
        );
        let mut row = TableRow::new(cells);
        if line.row.gone {
            row = row.style(Style::new().fg(Color::DarkGray));
        }
        row
    });
    let widths = std::iter::once(Constraint::Length(name_width))
        .chain(columns.iter().map(|(_, w)| Constraint::Length(*w)));
    let table = Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut table_state = TableState::default().with_selected(selected.map(|s| s - first));
    frame.render_stateful_widget(table, area, &mut table_state);
    if screen.lines.is_empty() {
        let empty =
            Paragraph::new("nothing yet: rows appear as cgroups show activity or are sampled")
                .style(Style::new().fg(Color::DarkGray));
        frame.render_widget(
            empty,
            Rect {
                y: area.y + 1,
                height: 1,
                ..area
            },
        );
    }
}

/// One figure's cell.
fn cell(column: Column, row: &Row, width: u16, killed_lately: bool) -> Cell<'static> {
    let dash = || "-".to_owned();
    let text = match column {
        Column::Name => String::new(),
        Column::Memory => memory(row, width),
        Column::Cache => row.cache_bytes.map_or_else(dash, bytes),
        Column::Evicted => rate_bytes(row.evicted_per_s),
        Column::EvictedByOthers => row
            .evicted_by_others
            .map_or_else(dash, |s| format!("{:.0}%", s * 100.0)),
        Column::Refaults => rate(row.refaults_per_s),
        Column::StallP99 => row.stall_p99_ns.map_or_else(dash, duration),
        Column::Pressure => row.memory_pressure.map_or_else(dash, |p| format!("{p:.1}")),
        Column::OomKills => row.oom_kills.to_string(),
        Column::Throttled => row
            .throttled_share
            .map_or_else(dash, |s| format!("{:.0}%", s * 100.0)),
        Column::ThrottledMs => row
            .throttled_ms_per_s
            .map_or_else(dash, |ms| format!("{ms:.0}")),
        Column::Quota => row.quota_millicores.map_or_else(dash, |m| format!("{m}m")),
    };
    let mut style = Style::new();
    if column == Column::OomKills && row.oom_kills > 0 {
        style = style.fg(Color::Red);
        if killed_lately {
            style = style.add_modifier(Modifier::BOLD | Modifier::REVERSED);
        }
    }
    if column == Column::Throttled && row.throttled_share.is_some_and(|s| s >= 0.25) {
        style = style.fg(Color::Yellow);
    }
    Cell::from(text).style(style)
}

/// `1.2G/2G ▆▆▆▆░░` — usage, limit, and a bar of their ratio.
fn memory(row: &Row, width: u16) -> String {
    let Some(usage) = row.usage_bytes else {
        return "-".to_owned();
    };
    let Some(limit) = row.limit_bytes.filter(|l| *l < u64::MAX / 2) else {
        return bytes(usage);
    };
    let figures = format!("{}/{}", bytes(usage), bytes(limit));
    let bar_width = usize::from(width).saturating_sub(figures.chars().count() + 1);
    #[expect(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a bar's length"
    )]
    let filled =
        ((usage as f64 / limit.max(1) as f64).min(1.0) * bar_width as f64).round() as usize;
    format!(
        "{figures} {}{}",
        "█".repeat(filled),
        "░".repeat(bar_width.saturating_sub(filled))
    )
}

fn rate_bytes(per_second: f64) -> String {
    if per_second <= 0.0 {
        return "0".to_owned();
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "display"
    )]
    bytes(per_second.round() as u64)
}

fn rate(per_second: f64) -> String {
    if per_second >= 100.0 {
        format!("{per_second:.0}")
    } else {
        format!("{per_second:.1}")
    }
}

/// `850µs`, `12ms`, `1.2s`.
fn duration(ns: u64) -> String {
    match ns {
        0..1_000_000 => format!("{}µs", ns / 1000),
        1_000_000..1_000_000_000 => format!("{}ms", ns / 1_000_000),
        #[expect(clippy::cast_precision_loss, reason = "display")]
        _ => format!("{:.1}s", ns as f64 / 1e9),
    }
}

fn draw_detail(
    frame: &mut Frame<'_>,
    area: Rect,
    label: &str,
    detail: &Detail,
    screen: &Screen<'_>,
) {
    let block = Block::new()
        .borders(Borders::TOP)
        .title(format!(" {} ", printable(label)));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [peers, kills, spark] = Layout::vertical([
        Constraint::Min(2),
        Constraint::Length(3),
        Constraint::Length(2),
    ])
    .areas(inner);
    let [evicted_by, evicts] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(peers);
    let list = |title: &str, peers: &[(String, f64)]| {
        let mut text = vec![TextLine::styled(
            title.to_owned(),
            Style::new().add_modifier(Modifier::BOLD),
        )];
        if peers.is_empty() {
            text.push(TextLine::raw("  nobody"));
        }
        text.extend(peers.iter().map(|(name, rate)| {
            TextLine::raw(format!("  {:>7}/s  {}", rate_bytes(*rate), printable(name)))
        }));
        Paragraph::new(text)
    };
    frame.render_widget(list("evicted by", &detail.evicted_by), evicted_by);
    frame.render_widget(list("evicts", &detail.evicts), evicts);
    let mut kill_lines = vec![TextLine::styled(
        "OOM kills",
        Style::new().add_modifier(Modifier::BOLD),
    )];
    if detail.kills.is_empty() {
        kill_lines.push(TextLine::raw("  none"));
    }
    kill_lines.extend(detail.kills.iter().rev().map(|k| kill_line(k, screen)));
    frame.render_widget(Paragraph::new(kill_lines), kills);
    let [label_area, graph] =
        Layout::horizontal([Constraint::Length(16), Constraint::Min(1)]).areas(spark);
    frame.render_widget(
        Paragraph::new(TextLine::styled(
            "throttled/intvl",
            Style::new().add_modifier(Modifier::BOLD),
        )),
        label_area,
    );
    frame.render_widget(
        Sparkline::default()
            .data(detail.throttled_ns.as_slice())
            .style(Style::new().fg(Color::Yellow)),
        graph,
    );
}

fn kill_line(kill: &Kill, screen: &Screen<'_>) -> TextLine<'static> {
    let limit = match (&kill.limit_path, kill.limit_bytes, kill.usage_bytes) {
        (Some(path), Some(limit), usage) => format!(
            "limit of {} hit at {}/{}",
            printable(path),
            usage.map_or_else(|| "?".to_owned(), bytes),
            bytes(limit)
        ),
        (Some(path), None, _) => format!("limit of {} hit", printable(path)),
        (None, _, _) => "the machine's memory ran out".to_owned(),
    };
    TextLine::raw(format!(
        "  {}  {} {}  {limit}",
        (screen.kill_time)(kill.at_ns),
        kill.pid,
        printable(&kill.comm)
    ))
}

fn draw_status(frame: &mut Frame<'_>, area: Rect, state: &UiState, screen: &Screen<'_>) {
    let text = match &state.editing {
        Some(filter) => format!(
            "filter (name or glob, Enter to apply, Esc to cancel): {}",
            printable(filter)
        ),
        None => format!(
            "q quit  ? help  / filter  < > sort  r reverse  Enter detail  e expand  t tree   {}{}",
            screen.losses,
            screen
                .note
                .map(|n| format!("   {}", printable(n.trim_start_matches("cgtrace: "))))
                .unwrap_or_default()
        ),
    };
    frame.render_widget(
        Paragraph::new(text).style(Style::new().add_modifier(Modifier::REVERSED)),
        area,
    );
}

const HELP: &[&str] = &[
    "q, Ctrl-C     quit",
    "↑ ↓ j k       select a line (PgUp PgDn Home End)",
    "Enter         detail: who evicts it, whom it evicts, its",
    "              OOM kills, its throttling",
    "< >           sort by the column to the left, right",
    "r             reverse the order",
    "/             filter by name, or glob (* ? [a-z])",
    "Esc           close the detail, clear the filter",
    "e + -         open or close a pod into its containers",
    "t             workloads, or the flat cgroup tree",
    "← → space     replay: step back, forward, play/pause",
    "[ ]           replay: the first, the last interval",
    "",
    "any key closes this help",
];

fn draw_help(frame: &mut Frame<'_>, area: Rect) {
    let width = 62.min(area.width);
    let height = (u16::try_from(HELP.len()).unwrap_or(u16::MAX) + 2).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(HELP.iter().map(|l| TextLine::raw(*l)).collect::<Vec<_>>())
            .block(Block::bordered().title(" keys ")),
        popup,
    );
}

/// `text` with what a terminal would act on shown as text, so a name
/// cannot write to the terminal (owned, for the widgets).
#[must_use]
pub fn printable(text: &str) -> String {
    crate::text::printable(text).into_owned()
}

/// `text` cut to `width` columns, keeping the end.
fn tail(text: &str, width: usize) -> String {
    if width < 2 {
        return String::new();
    }
    crate::view::format::tail(text, width)
}

#[cfg(test)]
mod tests {
    use crossterm::event::{KeyCode, KeyEvent};
    use ratatui::{Terminal, backend::TestBackend};

    use super::{Screen, draw, fitting_columns, printable};
    use crate::{
        model::top::{Detail, Kill},
        view::top::{
            lines::{Column, Grouping, Line, lines, tests},
            state::{Action, UiState},
        },
    };

    fn shown(state: &UiState) -> Vec<Line<'static>> {
        static ROWS: std::sync::LazyLock<Vec<crate::model::top::Row>> =
            std::sync::LazyLock::new(tests::rows);
        lines(
            &ROWS,
            &mut tests::identify,
            state.grouping,
            &state.expanded,
            &state.filter,
            state.sort,
            state.reverse,
        )
    }

    /// The screen as text, one string per row.
    fn render(width: u16, height: u16, state: &UiState, detail: Option<&Detail>) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        let lines = shown(state);
        let kill_time = |ns: u64| format!("t+{}s", ns / 1_000_000_000);
        let screen = Screen {
            time: "12-01 10:00:00.000".to_owned(),
            mode: "live, every 1s".to_owned(),
            lines: &lines,
            detail,
            now_ns: 10_000_000_000,
            kill_time: &kill_time,
            losses: "lost: 0 drops".to_owned(),
            note: None,
        };
        terminal.draw(|frame| draw(frame, state, &screen)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buffer[(x, y)].symbol().to_owned())
                    .collect::<String>()
            })
            .collect()
    }

    fn press(state: &mut UiState, code: KeyCode) -> Action {
        let lines = shown(state);
        state.key(KeyEvent::from(code), &lines)
    }

    #[test]
    fn eighty_by_twenty_four_keeps_the_name_and_the_main_columns() {
        let screen = render(80, 24, &UiState::default(), None);
        assert_eq!(screen.len(), 24);
        assert!(screen[0].starts_with("cgtrace top"), "{screen:#?}");
        for heading in ["WORKLOAD", "MEMORY/LIMIT", "OOM", "THR%"] {
            assert!(screen[1].contains(heading), "{heading}: {screen:#?}");
        }
        assert!(screen[2].starts_with("▸ shop/web-7d9f"), "{screen:#?}");
        assert!(screen[2].contains("300M/512M"), "{screen:#?}");
        assert!(screen[23].starts_with("q quit"), "{screen:#?}");
        // Wider, every column.
        assert_eq!(fitting_columns(200).len(), 11);
        assert!(fitting_columns(80).len() < 11);
        let wide = render(200, 30, &UiState::default(), None);
        assert!(
            wide[1].contains("STALL99") && wide[1].contains("QUOTA"),
            "{wide:#?}"
        );
        assert!(
            wide.iter()
                .any(|l| l.contains("/spinner") && l.contains("200m"))
        );
        // And tiny: nothing panics.
        let _ = render(20, 5, &UiState::default(), None);
    }

    #[test]
    fn keys_sort_filter_expand_and_quit() {
        let mut state = UiState::default();
        assert_eq!(press(&mut state, KeyCode::Char('>')), Action::Redraw);
        assert_eq!(state.sort, Column::Cache);
        press(&mut state, KeyCode::Char('<'));
        press(&mut state, KeyCode::Char('<'));
        assert_eq!(state.sort, Column::Name);
        press(&mut state, KeyCode::Char('<'));
        assert_eq!(state.sort, Column::Quota, "round the list");
        let screen = render(200, 30, &state, None);
        assert!(
            screen[2].contains("/spinner"),
            "the quota first: {screen:#?}"
        );

        press(&mut state, KeyCode::Char('/'));
        for c in "batch".chars() {
            press(&mut state, KeyCode::Char(c));
        }
        assert!(render(80, 24, &state, None)[23].contains("filter"));
        press(&mut state, KeyCode::Enter);
        assert_eq!(state.filter, "batch");
        let screen = render(80, 24, &state, None);
        assert!(
            screen[2].contains("/batch") && screen[3].trim().is_empty(),
            "{screen:#?}"
        );
        press(&mut state, KeyCode::Esc);
        assert!(state.filter.is_empty());

        state.sort = Column::Memory;
        press(&mut state, KeyCode::Char('e'));
        assert!(state.expanded.contains("shop/web-7d9f"));
        let screen = render(80, 24, &state, None);
        assert!(screen[3].contains("nginx"), "{screen:#?}");
        press(&mut state, KeyCode::Char('t'));
        assert_eq!(state.grouping, Grouping::Tree);
        press(&mut state, KeyCode::Char('?'));
        assert!(
            render(80, 24, &state, None)
                .iter()
                .any(|l| l.contains(" keys "))
        );
        assert_eq!(
            press(&mut state, KeyCode::Char('x')),
            Action::Redraw,
            "closes the help"
        );
        assert!(!state.help);
        assert_eq!(press(&mut state, KeyCode::Right), Action::Step(1));
        assert_eq!(press(&mut state, KeyCode::Char(' ')), Action::TogglePlay);
        assert_eq!(press(&mut state, KeyCode::Char('q')), Action::Quit);
        let mut ctrl_c = UiState::default();
        assert_eq!(
            ctrl_c.key(
                KeyEvent::new(KeyCode::Char('c'), crossterm::event::KeyModifiers::CONTROL),
                &[]
            ),
            Action::Quit
        );
    }

    #[test]
    fn the_detail_pane_says_who_evicts_whom_the_kills_and_the_throttling() {
        let mut state = UiState::default();
        press(&mut state, KeyCode::Down);
        assert_eq!(state.selected.as_deref(), Some("/batch"));
        press(&mut state, KeyCode::Enter);
        assert!(state.detail);
        let detail = Detail {
            evicted_by: vec![("/noisy".to_owned(), 2.0 * 1_048_576.0)],
            evicts: vec![],
            kills: vec![Kill {
                at_ns: 5_000_000_000,
                pid: 4242,
                comm: "python3".to_owned(),
                limit_path: Some("/batch".to_owned()),
                limit_bytes: Some(100 << 20),
                usage_bytes: Some(100 << 20),
            }],
            throttled_ns: vec![0, 50, 100, 50],
        };
        let screen = render(100, 30, &state, Some(&detail));
        let text = screen.join("\n");
        assert!(
            text.contains("evicted by") && text.contains("2M/s  /noisy"),
            "{text}"
        );
        assert!(
            text.contains("t+5s  4242 python3  limit of /batch hit at 100M/100M"),
            "{text}"
        );
        assert!(text.contains("throttled/intvl"), "{text}");
    }

    #[test]
    fn a_new_kill_is_highlighted_and_names_are_printed_escaped() {
        let mut terminal = Terminal::new(TestBackend::new(80, 10)).unwrap();
        let state = UiState::default();
        let lines = shown(&state);
        let kill_time = |_: u64| String::new();
        let screen = Screen {
            time: String::new(),
            mode: String::new(),
            lines: &lines,
            detail: None,
            now_ns: 10_000_000_000,
            kill_time: &kill_time,
            losses: String::new(),
            note: None,
        };
        terminal.draw(|frame| draw(frame, &state, &screen)).unwrap();
        let buffer = terminal.backend().buffer();
        let row = (0..10)
            .find(|y| {
                (0..10)
                    .map(|x| buffer[(x, *y)].symbol())
                    .collect::<String>()
                    .starts_with("/batch")
            })
            .unwrap();
        let oom_x = (0..80)
            .find(|x| buffer[(*x, 1)].symbol() == "O" && buffer[(*x + 1, 1)].symbol() == "O")
            .unwrap();
        let cell = &buffer[(oom_x, row)];
        assert_eq!(cell.symbol(), "2");
        assert!(
            cell.modifier.contains(ratatui::style::Modifier::REVERSED),
            "{cell:?}"
        );
        assert_eq!(printable("a\u{1b}[2Jb\n"), "a\\x1b[2Jb\\x0a");
    }
}
