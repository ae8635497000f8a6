//! The prices page: USD per million tokens of each model, and a form to set a model's price.

use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::admin::{ListPricesRequest, Price};

use super::delete::delete_button;
use super::pages::{Notice, field_error, layout, text_input};
use super::session::Session;
use super::{Change, Console, Page, call, listed};

/// The page, with `notice` about the last change.
pub(super) async fn prices_page(
    console: &Console,
    session: &Session,
    notice: &mut Notice,
) -> Markup {
    let answer = console
        .api
        .list_prices(call(session, ListPricesRequest {}))
        .await;
    let prices = listed(answer, notice).prices;
    let body = html! {
        form.inline method="post" action="/prices" {
            input type="hidden" name="csrf" value=(session.csrf);
            (text_input("model", "model", "Model", "gpt-4o"))
            (field_error(notice, "model"))
            label for="input" { "Input USD / Mtok" }
            input type="text" id="input" name="input" inputmode="decimal" size="7";
            label for="output" { "Output USD / Mtok" }
            input type="text" id="output" name="output" inputmode="decimal" size="7";
            (field_error(notice, "price"))
            button type="submit" { "Set price" }
        }
        table {
            thead { tr { th { "Model" } th { "Input" } th { "Output" } th { "Cached input" } th { "Cache write" } th {} } }
            tbody {
                @for price in &prices {
                    tr {
                        td { (price.model) }
                        td { (price.input_per_mtok) }
                        td { (price.output_per_mtok) }
                        td { (price.cached_input_per_mtok) }
                        td { (price.cache_write_per_mtok) }
                        td { (delete_button(session, "prices", &price.model, &price.model)) }
                    }
                }
            }
        }
    };
    layout("Prices (USD per million tokens)", session, notice, body)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct NewPrice {
    model: String,
    input: String,
    output: String,
}

pub(super) async fn set_price(Change(editor, form): Change<NewPrice>) -> Response {
    let amount = |text: &str| text.trim().parse::<f64>().ok();
    let (Some(input), Some(output)) = (amount(&form.input), amount(&form.output)) else {
        return editor
            .refused(
                Page::Prices,
                "price",
                "input and output prices are numbers of USD per million tokens",
            )
            .await;
    };
    let price = Price {
        model: form.model.trim().to_owned(),
        input_per_mtok: input,
        output_per_mtok: output,
        ..Price::default()
    };
    let result = editor.api().set_price(editor.call(price)).await;
    editor
        .answer(result, Page::Prices, &[("model", "model"), ("", "price")])
        .await
}
