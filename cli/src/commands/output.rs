//! Where and how results are shown: aligned tables or JSON on stdout, diagnostics on
//! stderr, and the one rule for when stderr may carry colour or a progress bar.
//!
//! Stdout carries only the command's result (or records), so `pubsub list -o json | jq`
//! and `pubsub read t > file` never see a progress bar or a warning.

use std::io::{IsTerminal, Write};

use serde::Serialize;

/// How a command prints its result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Human-readable: aligned tables, one value per line.
    #[default]
    Text,
    /// JSON, for scripts.
    Json,
}

/// A table with a header row, printed with columns aligned by padding.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; it should have one cell per column.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, each line ending in a newline. Columns are separated by at
    /// least two spaces; lines carry no trailing blanks.
    pub fn render(&self) -> String {
        let lines = std::iter::once(&self.header).chain(&self.rows);
        let mut widths: Vec<usize> = Vec::new();
        for line in lines.clone() {
            for (i, cell) in line.iter().enumerate() {
                let width = cell.chars().count();
                match widths.get_mut(i) {
                    Some(w) => *w = (*w).max(width),
                    None => widths.push(width),
                }
            }
        }
        let mut text = String::new();
        for line in lines {
            let mut out = String::new();
            for (i, cell) in line.iter().enumerate() {
                out.push_str(cell);
                let pad = widths[i] - cell.chars().count() + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
            text.push_str(out.trim_end());
            text.push('\n');
        }
        text
    }
}

/// Writes `text` to stdout as it is.
pub fn print_text(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

/// Writes `value` to stdout as pretty JSON and a newline.
pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    // As an io::Error, so that a closed stdout is recognised as a broken pipe.
    serde_json::to_writer_pretty(&mut stdout, value).map_err(std::io::Error::from)?;
    stdout.write_all(b"\n")?;
    stdout.flush()?;
    Ok(())
}

/// True when stderr may carry colour and progress bars: it is a terminal and the user
/// has not set `NO_COLOR` (https://no-color.org: set and non-empty disables colour).
pub fn stderr_is_styled() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

/// Prints `error: <message>` on stderr as one line; `error:` is red on a styled stderr.
pub fn print_error(message: &str) {
    let one_line = message.replace(['\n', '\r'], " ");
    let prefix = if stderr_is_styled() {
        "\x1b[1;31merror:\x1b[0m"
    } else {
        "error:"
    };
    eprintln!("{prefix} {one_line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_without_trailing_blanks() {
        let mut table = Table::new(&["NAME", "PARTITIONS"]);
        table.row(vec!["orders-long".into(), "3".into()]);
        table.row(vec!["x".into(), "12".into()]);
        assert_eq!(
            table.render(),
            "NAME         PARTITIONS\norders-long  3\nx            12\n"
        );
    }
}
