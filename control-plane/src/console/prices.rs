//! The prices page: USD per million tokens of each model, and a form to set a model's price.

use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::admin::{ListPricesRequest, Price};

use super::delete::delete_button;
use super::forms::table;
use super::{Change, Drawing, Page};

/// The page, with the drawing's notice about the last change.
pub(super) async fn prices_page(drawing: &mut Drawing<'_>) -> Markup {
    let prices = drawing
        .list(AdminService::list_prices, ListPricesRequest {})
        .await
        .prices;
    let (session, form) = (drawing.session, drawing.forms());
    let body = html! {
        (form.inline("/prices", "Set price", html! {
            (form.text("model", "model", "Model", "gpt-4o"))
            (form.decimal("input", "input", "Input USD / Mtok", 7))
            (form.decimal("output", "output", "Output USD / Mtok", 7))
            (form.error("price"))
        }))
        (table(&["Model", "Input", "Output", "Cached input", "Cache write", ""], html! {
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
        }))
    };
    drawing.layout("Prices (USD per million tokens)", body)
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
        let message = "input and output prices are numbers of USD per million tokens";
        return editor.refused(Page::Prices, "price", message).await;
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
