//! What the person at the screen chose: grouping, sort, filter, the
//! selected line, the panes open; and what each key does to it.

use std::collections::BTreeSet;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::lines::{Column, Grouping, Line};

/// What a key asks of the loop around the screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing changed.
    None,
    /// The screen changed: draw it again.
    Redraw,
    Quit,
    /// A replay: this many intervals back (negative) or forward.
    Step(i64),
    /// A replay: play or pause.
    TogglePlay,
}

/// The screen's state.
#[derive(Clone, Debug)]
pub struct UiState {
    pub grouping: Grouping,
    pub sort: Column,
    /// Ascending instead of descending (names: Z to A).
    pub reverse: bool,
    /// The filter in force.
    pub filter: String,
    /// The filter being typed after `/`.
    pub editing: Option<String>,
    /// The selected line, by path (it moves when the order does).
    pub selected: Option<String>,
    /// The index the selection was last seen at.
    pub cursor: usize,
    pub detail: bool,
    pub help: bool,
    /// Pods opened into their containers.
    pub expanded: BTreeSet<String>,
}

impl Default for UiState {
    fn default() -> Self {
        Self {
            grouping: Grouping::Workloads,
            sort: Column::Memory,
            reverse: false,
            filter: String::new(),
            editing: None,
            selected: None,
            cursor: 0,
            detail: false,
            help: false,
            expanded: BTreeSet::new(),
        }
    }
}

impl UiState {
    /// The selected line's index among `lines` (following it by path).
    #[must_use]
    pub fn selected_index(&self, lines: &[Line]) -> Option<usize> {
        if lines.is_empty() {
            return None;
        }
        self.selected
            .as_ref()
            .and_then(|path| lines.iter().position(|l| l.path == path))
            .or(Some(self.cursor.min(lines.len() - 1)))
    }

    fn select(&mut self, lines: &[Line], index: usize) {
        if let Some(line) = lines.get(index) {
            self.cursor = index;
            self.selected = Some(line.path.to_owned());
        }
    }

    /// Applies `key` to the state; `lines` are those on screen.
    pub fn key(&mut self, key: KeyEvent, lines: &[Line]) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if let Some(text) = &mut self.editing {
            match key.code {
                KeyCode::Enter => {
                    self.filter = std::mem::take(text);
                    self.editing = None;
                    self.cursor = 0;
                    self.selected = None;
                }
                KeyCode::Esc => self.editing = None,
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char('u') if ctrl => text.clear(),
                KeyCode::Char(c) => text.push(c),
                _ => return Action::None,
            }
            return Action::Redraw;
        }
        if self.help {
            // Any key closes the help; q still quits.
            self.help = false;
            return if key.code == KeyCode::Char('q') {
                Action::Quit
            } else {
                Action::Redraw
            };
        }
        let current = self.selected_index(lines).unwrap_or(0);
        let last = lines.len().saturating_sub(1);
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Esc if self.detail => self.detail = false,
            KeyCode::Esc if !self.filter.is_empty() => self.filter.clear(),
            KeyCode::Char('?' | 'h') => self.help = true,
            KeyCode::Char('/') => self.editing = Some(self.filter.clone()),
            KeyCode::Up | KeyCode::Char('k') => self.select(lines, current.saturating_sub(1)),
            KeyCode::Down | KeyCode::Char('j') => self.select(lines, (current + 1).min(last)),
            KeyCode::PageUp => self.select(lines, current.saturating_sub(10)),
            KeyCode::PageDown => self.select(lines, (current + 10).min(last)),
            KeyCode::Home | KeyCode::Char('g') => self.select(lines, 0),
            KeyCode::End | KeyCode::Char('G') => self.select(lines, last),
            KeyCode::Enter => self.detail = !self.detail && !lines.is_empty(),
            KeyCode::Char('>' | '.') => self.sort = shift(self.sort, 1),
            KeyCode::Char('<' | ',') => self.sort = shift(self.sort, -1),
            KeyCode::Char('r') => self.reverse = !self.reverse,
            KeyCode::Char('t') => {
                self.grouping = match self.grouping {
                    Grouping::Workloads => Grouping::Tree,
                    Grouping::Tree => Grouping::Workloads,
                };
            }
            KeyCode::Char('e' | '+' | '-') => {
                let Some(line) = lines.get(current).filter(|l| l.expandable) else {
                    return Action::None;
                };
                if !self.expanded.remove(&line.label) {
                    self.expanded.insert(line.label.clone());
                }
            }
            KeyCode::Left => return Action::Step(-1),
            KeyCode::Right => return Action::Step(1),
            KeyCode::Char('[') => return Action::Step(i64::MIN),
            KeyCode::Char(']') => return Action::Step(i64::MAX),
            KeyCode::Char(' ') => return Action::TogglePlay,
            _ => return Action::None,
        }
        Action::Redraw
    }
}

/// The column `by` places after `column`, round the list.
fn shift(column: Column, by: isize) -> Column {
    let all = Column::ALL;
    let at = all.iter().position(|c| *c == column).unwrap_or(0);
    let next = (at.cast_signed() + by).rem_euclid(all.len().cast_signed());
    all[next.cast_unsigned()]
}
