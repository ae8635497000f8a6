//! What the CLI prints: a response message as pretty JSON (`--output json`), or as aligned
//! text rendered from its serialised form by one generic renderer (`--output table`): a list
//! field's messages become the rows of a table, single messages print as `key: value` lines.

use std::fmt::Display;
use std::io::Write;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::tree::Node;

/// How results are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text for people.
    #[default]
    Table,
    /// The response message as pretty JSON, for scripts.
    Json,
}

/// How to show a message in table mode; the default shows everything.
#[derive(Clone, Copy, Default)]
pub struct View<'a> {
    /// The columns of tables, in this order (default: every field of the rows).
    pub columns: Option<&'a [&'a str]>,
    /// Fields shown as numbers with a fixed count of decimals, wherever they appear.
    pub decimals: &'a [(&'a str, usize)],
}

/// Prints `message` to stdout in `format`.
pub fn print<T: Serialize>(message: &T, format: Format, view: &View) -> anyhow::Result<()> {
    let text = match format {
        Format::Json => serde_json::to_string_pretty(message)? + "\n",
        Format::Table => render(&Node::of(message)?, view),
    };
    emit(&text)
}

/// Writes `text` to stdout; a closed pipe (`… | head`) is not an error.
pub fn emit(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result.context("writing to stdout"),
    }
}

/// How a column of lines printed as they come is padded to its width.
#[derive(Clone, Copy)]
pub enum Align {
    /// Padded on the right (text).
    Left(usize),
    /// Padded on the left (numbers).
    Right(usize),
}

/// One line of `cells`, each padded as its column says, two spaces apart.
pub fn aligned<T: Display>(columns: &[Align], cells: impl IntoIterator<Item = T>) -> String {
    let mut line = String::new();
    for (i, (align, cell)) in columns.iter().zip(cells).enumerate() {
        if i > 0 {
            line.push_str("  ");
        }
        line.push_str(&match *align {
            Align::Left(width) => format!("{cell:<width$}"),
            Align::Right(width) => format!("{cell:>width$}"),
        });
    }
    line + "\n"
}

/// A time as RFC 3339 UTC text to the second, or empty.
pub fn rfc3339(at: Option<DateTime<Utc>>) -> String {
    at.map(|at| at.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// The table-mode text of `node`.
pub fn render(node: &Node, view: &View) -> String {
    let node = with_decimals(node.clone(), view.decimals);
    let mut out = String::new();
    match &node {
        Node::Record(fields) | Node::Map(fields) => record(&mut out, fields, view, 0),
        Node::List(items) => out.push_str(&table(items, view, "items")),
        other => {
            out.push_str(&cell(other));
            out.push('\n');
        }
    }
    out
}

/// Marks the numbers under the fields named in `decimals` to be shown with fixed decimals.
fn with_decimals(node: Node, decimals: &[(&str, usize)]) -> Node {
    if decimals.is_empty() {
        return node;
    }
    let fields = |fields: Vec<(String, Node)>| {
        fields
            .into_iter()
            .map(|(key, value)| {
                let value = match (decimals.iter().find(|(name, _)| *name == key), value) {
                    (Some((_, places)), Node::Float(v)) => Node::Fixed(v, *places),
                    (Some((_, places)), Node::Int(v)) => Node::Fixed(v as f64, *places),
                    (_, value) => with_decimals(value, decimals),
                };
                (key, value)
            })
            .collect()
    };
    match node {
        Node::Record(f) => Node::Record(fields(f)),
        Node::Map(f) => Node::Map(fields(f)),
        Node::List(items) => Node::List(
            items
                .into_iter()
                .map(|item| with_decimals(item, decimals))
                .collect(),
        ),
        other => other,
    }
}

/// A message: its fields as aligned `key: value` lines (nested messages indented below their
/// key), then each list of messages as a table. A message whose only non-numeric field is a
/// list (a list response) prints that table without a heading.
fn record(out: &mut String, fields: &[(String, Node)], view: &View, indent: usize) {
    let lone = fields.iter().filter(|(_, v)| !v.is_number()).count() == 1;
    let is_rows = |value: &Node| match value {
        Node::List(items) if items.is_empty() => lone,
        Node::List(items) => items.iter().all(|i| matches!(i, Node::Record(_))),
        _ => false,
    };
    let (rows, lines): (Vec<_>, Vec<_>) = fields.iter().partition(|(_, v)| is_rows(v));
    let pad = " ".repeat(indent);
    let width = lines
        .iter()
        .filter(|(_, v)| !matches!(v, Node::Record(_)))
        .map(|(k, _)| k.chars().count() + 1)
        .max()
        .unwrap_or(0);
    for (key, value) in &lines {
        match value {
            Node::Record(inner) => {
                out.push_str(&format!("{pad}{key}:\n"));
                record(out, inner, view, indent + 2);
            }
            _ => {
                let line = format!("{pad}{:<width$} {}", format!("{key}:"), cell(value));
                out.push_str(line.trim_end());
                out.push('\n');
            }
        }
    }
    for (key, value) in &rows {
        let Node::List(items) = value else { continue };
        if !lines.is_empty() || rows.len() > 1 {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&format!("{pad}{key}:\n"));
        }
        for line in table(items, view, key).lines() {
            out.push_str(&pad);
            out.push_str(line);
            out.push('\n');
        }
    }
}

/// Rows under a header, columns aligned (numbers to the right).
fn table(items: &[Node], view: &View, name: &str) -> String {
    if items.is_empty() {
        return format!("(no {})\n", name.replace('_', " "));
    }
    let mut columns: Vec<String> = match view.columns {
        Some(columns) => columns.iter().map(|c| (*c).to_owned()).collect(),
        None => {
            let mut columns: Vec<String> = Vec::new();
            for item in items {
                match item {
                    Node::Record(fields) | Node::Map(fields) => {
                        for (key, _) in fields {
                            if !columns.contains(key) {
                                columns.push(key.clone());
                            }
                        }
                    }
                    _ => {
                        if !columns.iter().any(|c| c == "value") {
                            columns.push("value".to_owned());
                        }
                    }
                }
            }
            columns
        }
    };
    let value_of = |item: &Node, column: &str| -> Option<Node> {
        match item {
            Node::Record(_) | Node::Map(_) => item.field(column).cloned(),
            other if column == "value" => Some(other.clone()),
            _ => None,
        }
    };
    let mut numeric = vec![true; columns.len()];
    let mut cells: Vec<Vec<String>> = Vec::with_capacity(items.len());
    for item in items {
        let mut row = Vec::with_capacity(columns.len());
        for (i, column) in columns.iter().enumerate() {
            let value = value_of(item, column).unwrap_or(Node::Null);
            let text = cell(&value);
            if !text.is_empty() && !value.is_number() {
                numeric[i] = false;
            }
            row.push(text);
        }
        cells.push(row);
    }
    // Columns empty on every row say nothing; leave them out unless asked for.
    if view.columns.is_none() {
        let keep: Vec<bool> = (0..columns.len())
            .map(|i| cells.iter().any(|row| !row[i].is_empty()))
            .collect();
        if keep.iter().any(|k| *k) {
            columns = kept(columns, &keep);
            numeric = kept(numeric, &keep);
            cells = cells.into_iter().map(|row| kept(row, &keep)).collect();
        }
    }
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|row| row[i].chars().count())
                .chain([c.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |texts: &[String]| {
        let mut line = String::new();
        for (i, text) in texts.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let width = widths[i];
            if numeric[i] {
                line.push_str(&format!("{text:>width$}"));
            } else {
                line.push_str(&format!("{text:<width$}"));
            }
        }
        line.trim_end().to_owned() + "\n"
    };
    let mut out = line(&columns);
    for row in &cells {
        out.push_str(&line(row));
    }
    out
}

/// The items whose `keep` is true.
fn kept<T>(items: Vec<T>, keep: &[bool]) -> Vec<T> {
    items
        .into_iter()
        .zip(keep)
        .filter_map(|(item, keep)| keep.then_some(item))
        .collect()
}

/// One value as text: lists joined with ",", maps and messages as `k=v` joined with ",".
fn cell(node: &Node) -> String {
    match node {
        Node::Null => String::new(),
        Node::Bool(b) => b.to_string(),
        Node::Int(i) => i.to_string(),
        Node::Float(f) => f.to_string(),
        Node::Fixed(f, places) => format!("{f:.places$}"),
        Node::Text(s) => s.replace(['\n', '\r', '\t'], " "),
        Node::List(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        Node::Record(fields) | Node::Map(fields) => fields
            .iter()
            .map(|(k, v)| format!("{k}={}", cell(v)))
            .collect::<Vec<_>>()
            .join(","),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[derive(Serialize)]
    struct Team {
        id: String,
        name: String,
        size: u32,
        metadata: HashMap<String, String>,
    }

    #[derive(Serialize)]
    struct ListTeams {
        teams: Vec<Team>,
    }

    #[derive(Serialize)]
    struct Created {
        team: Team,
        tags: Vec<String>,
        secret: String,
    }

    fn team(id: &str, name: &str, size: u32) -> Team {
        Team {
            id: id.into(),
            name: name.into(),
            size,
            metadata: HashMap::from([("b".into(), "2".into()), ("a".into(), "1".into())]),
        }
    }

    #[test]
    fn a_list_response_is_a_table() -> anyhow::Result<()> {
        let list = ListTeams {
            teams: vec![team("t1", "ml-platform", 7), team("t22", "ops", 12)],
        };
        assert_eq!(
            render(&Node::of(&list)?, &View::default()),
            "id   name         size  metadata\n\
             t1   ml-platform     7  a=1,b=2\n\
             t22  ops            12  a=1,b=2\n"
        );
        let sparse = ListTeams {
            teams: vec![Team {
                metadata: HashMap::new(),
                ..team("t1", "", 1)
            }],
        };
        assert_eq!(
            render(&Node::of(&sparse)?, &View::default()),
            "id  size\nt1     1\n",
            "columns empty on every row are left out"
        );
        let columns = ["name", "id"];
        let view = View {
            columns: Some(&columns),
            ..View::default()
        };
        assert_eq!(
            render(&Node::of(&list)?, &view),
            "name         id\nml-platform  t1\nops          t22\n"
        );
        assert_eq!(
            render(&Node::of(&ListTeams { teams: vec![] })?, &view),
            "(no teams)\n"
        );
        Ok(())
    }

    #[test]
    fn a_single_message_is_key_value_lines() -> anyhow::Result<()> {
        let created = Created {
            team: team("t1", "ml", 3),
            tags: vec!["x".into(), "y".into()],
            secret: "tg-abc".into(),
        };
        assert_eq!(
            render(&Node::of(&created)?, &View::default()),
            "team:\n  id:       t1\n  name:     ml\n  size:     3\n  metadata: a=1,b=2\n\
             tags:   x,y\nsecret: tg-abc\n"
        );
        Ok(())
    }

    #[test]
    fn aligned_lines_pad_each_cell_but_an_unpadded_last() {
        let columns = [Align::Left(5), Align::Right(4), Align::Left(0)];
        assert_eq!(aligned(&columns, ["a", "b", "c"]), "a         b  c\n");
        assert_eq!(
            aligned(&columns, ["abcdef", "12345", ""]),
            "abcdef  12345  \n"
        );
    }

    #[test]
    fn decimals_apply_wherever_the_field_is() -> anyhow::Result<()> {
        #[derive(Serialize)]
        struct Row {
            cost_usd: f64,
        }
        #[derive(Serialize)]
        struct Rows {
            rows: Vec<Row>,
        }
        let view = View {
            decimals: &[("cost_usd", 6)],
            ..View::default()
        };
        assert_eq!(
            render(
                &Node::of(&Rows {
                    rows: vec![Row { cost_usd: 0.5 }, Row { cost_usd: 12.25 }]
                })?,
                &view
            ),
            " cost_usd\n 0.500000\n12.250000\n"
        );
        Ok(())
    }
}
