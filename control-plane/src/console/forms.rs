//! What the console's pages are built of: the notice a page shows about the last change, forms
//! that post with the session's CSRF token, their labelled inputs (those drawn through [`Forms`]
//! followed by the error the notice holds about their field), and tables.

use maud::{Markup, Render, html};
use tollgate_proto::admin::Team;

use super::session::Session;

/// What a page says about the last change, next to the field it concerns.
#[derive(Default)]
pub struct Notice {
    /// The form field the message is about (`name`, `alias`, …), or `None` for the page.
    pub field: Option<&'static str>,
    /// What is said; empty when there is nothing to say.
    pub message: String,
}

impl Notice {
    /// The message, when it is about form field `field`.
    pub fn about(&self, field: &str) -> Option<&str> {
        (self.field == Some(field) && !self.message.is_empty()).then_some(self.message.as_str())
    }

    /// The message, when it is about the page rather than a field.
    pub fn general(&self) -> Option<&str> {
        (self.field.is_none() && !self.message.is_empty()).then_some(self.message.as_str())
    }
}

/// The hidden field with the session's CSRF token that every form making a change carries.
pub fn csrf_input(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// The forms of a page drawn for a session: each posts the session's CSRF token, and each input
/// is followed by the error the page's notice holds about the field of its name.
#[derive(Clone, Copy)]
pub struct Forms<'a> {
    session: &'a Session,
    notice: &'a Notice,
}

impl<'a> Forms<'a> {
    /// The forms of a page for `session`, with `notice`'s errors next to their fields.
    pub fn new(session: &'a Session, notice: &'a Notice) -> Self {
        Forms { session, notice }
    }

    /// A form laid out in a line that posts `fields` to `action` with a `submit` button.
    pub fn inline(self, action: &str, submit: &str, fields: Markup) -> Markup {
        self.post("inline", action, submit, fields)
    }

    /// A form laid out in rows (`fields` are `div.row`s and fieldsets), posted like
    /// [`Forms::inline`].
    pub fn stacked(self, action: &str, submit: &str, fields: Markup) -> Markup {
        self.post("stacked", action, submit, fields)
    }

    fn post(self, layout: &str, action: &str, submit: &str, fields: Markup) -> Markup {
        html! {
            form class=(layout) method="post" action=(action) {
                (csrf_input(self.session))
                (fields)
                button type="submit" { (submit) }
            }
        }
    }

    /// A labelled text box (see [`text_input`]), and its error.
    pub fn text(self, id: &str, name: &str, label: &str, placeholder: &str) -> Markup {
        html! {
            (text_input(id, name, label, placeholder))
            (self.error(name))
        }
    }

    /// A labelled box `size` characters wide for a whole number (numeric keyboards on phones),
    /// and its error.
    pub fn number(self, id: &str, name: &str, label: &str, size: u8) -> Markup {
        self.sized(id, name, label, "numeric", size)
    }

    /// A labelled box `size` characters wide for an amount with decimals, and its error.
    pub fn decimal(self, id: &str, name: &str, label: &str, size: u8) -> Markup {
        self.sized(id, name, label, "decimal", size)
    }

    fn sized(self, id: &str, name: &str, label: &str, inputmode: &str, size: u8) -> Markup {
        html! {
            label for=(id) { (label) }
            input type="text" id=(id) name=(name) inputmode=(inputmode) size=(size);
            (self.error(name))
        }
    }

    /// A labelled drop-down of `choices` (value, text), after an empty choice reading `empty`
    /// when there is one; and its error.
    pub fn select<V: Render, T: Render>(
        self,
        id: &str,
        name: &str,
        label: &str,
        empty: Option<&str>,
        choices: impl IntoIterator<Item = (V, T)>,
    ) -> Markup {
        html! {
            label for=(id) { (label) }
            select id=(id) name=(name) {
                @if let Some(empty) = empty { option value="" { (empty) } }
                @for (value, text) in choices { option value=(value) { (text) } }
            }
            (self.error(name))
        }
    }

    /// The error the notice holds about `field`, when it holds one.
    pub fn error(self, field: &str) -> Markup {
        html! {
            @if let Some(message) = self.notice.about(field) {
                span.error role="alert" id={ (field) "-error" } { (message) }
            }
        }
    }
}

/// A labelled text box, with `placeholder` as its example when not empty.
pub fn text_input(id: &str, name: &str, label: &str, placeholder: &str) -> Markup {
    html! {
        label for=(id) { (label) }
        input type="text" id=(id) name=(name) placeholder=[(!placeholder.is_empty()).then_some(placeholder)];
    }
}

/// Words as drop-down choices, each its own text.
pub fn words<'a>(
    words: impl IntoIterator<Item = &'a str>,
) -> impl Iterator<Item = (&'a str, &'a str)> {
    words.into_iter().map(|word| (word, word))
}

/// Teams as drop-down choices: the id, shown by name.
pub fn team_choices(teams: &[Team]) -> impl Iterator<Item = (&str, &str)> {
    teams
        .iter()
        .map(|team| (team.id.as_str(), team.name.as_str()))
}

/// The inputs of a weekly time window — `time_start`, `time_end`, `timezone`, `weekdays` — with
/// ids starting with `prefix`.
pub fn window_inputs(prefix: &str) -> Markup {
    let (start, end) = (format!("{prefix}_start"), format!("{prefix}_end"));
    html! {
        label for=(start) { "From" }
        input type="time" id=(start) name="time_start";
        label for=(end) { "To" }
        input type="time" id=(end) name="time_end";
        (text_input(&format!("{prefix}_zone"), "timezone", "Time zone", "UTC"))
        (text_input(&format!("{prefix}_days"), "weekdays", "Days", "mon, tue (empty: every day)"))
    }
}

/// A table with `headings` over its columns (`""` over one without, like the delete buttons')
/// and `rows` as its body.
pub fn table(headings: &[&str], rows: Markup) -> Markup {
    table_of(None, headings, rows)
}

/// A [`table`] with an `id` of its own, for a page with more than one.
pub fn table_with_id(id: &str, headings: &[&str], rows: Markup) -> Markup {
    table_of(Some(id), headings, rows)
}

fn table_of(id: Option<&str>, headings: &[&str], rows: Markup) -> Markup {
    html! {
        table id=[id] {
            thead { tr { @for heading in headings { th { (heading) } } } }
            tbody { (rows) }
        }
    }
}
