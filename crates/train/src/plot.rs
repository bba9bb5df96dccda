//! The loss curves as a PNG, drawn with plotters' bitmap backend.
//!
//! No text is drawn: plotters' text needs a font backend that loads
//! system fonts (fontconfig/freetype), which a server may not have. The
//! picture is the two curves on a light grid instead: train loss in blue,
//! validation loss in red (with a dot per measurement), x from step 0 to
//! the last step, y from 0 to the largest loss; the CSV beside it has the
//! numbers.

use crate::error::{ErrorKind, Result};
use crate::train::Row;
use plotters::prelude::*;
use std::path::Path;

pub fn draw(history: &[Row], path: &Path) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| ErrorKind::Plot {
        detail: format!("{}: {e}", path.display()),
    };
    let (w, h) = (800u32, 500u32);
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let max_step = history.iter().map(|r| r.step).max().unwrap_or(1).max(1) as f64;
    let max_loss = history
        .iter()
        .flat_map(|r| [r.train_loss, r.val_loss])
        .flatten()
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-6)
        * 1.05;
    let area = root.margin(20, 20, 20, 20);
    let (pw, ph) = area.dim_in_pixel();
    let to_px = |step: f64, loss: f64| -> (i32, i32) {
        let x = step / max_step * (pw as f64 - 1.0);
        let y = (1.0 - loss / max_loss) * (ph as f64 - 1.0);
        (x.round() as i32, y.round() as i32)
    };
    let grid = RGBColor(225, 225, 225);
    for i in 0..=10 {
        let x = (i as f64 / 10.0 * (pw as f64 - 1.0)) as i32;
        let y = (i as f64 / 10.0 * (ph as f64 - 1.0)) as i32;
        area.draw(&PathElement::new(vec![(x, 0), (x, ph as i32 - 1)], grid))
            .map_err(|e| err(&e))?;
        area.draw(&PathElement::new(vec![(0, y), (pw as i32 - 1, y)], grid))
            .map_err(|e| err(&e))?;
    }
    let axis = BLACK.stroke_width(2);
    area.draw(&PathElement::new(
        vec![(0, 0), (0, ph as i32 - 1), (pw as i32 - 1, ph as i32 - 1)],
        axis,
    ))
    .map_err(|e| err(&e))?;
    let train: Vec<(i32, i32)> = history
        .iter()
        .filter_map(|r| {
            r.train_loss
                .filter(|v| v.is_finite())
                .map(|l| to_px(r.step as f64, l))
        })
        .collect();
    let val: Vec<(i32, i32)> = history
        .iter()
        .filter_map(|r| {
            r.val_loss
                .filter(|v| v.is_finite())
                .map(|l| to_px(r.step as f64, l))
        })
        .collect();
    area.draw(&PathElement::new(train, BLUE.stroke_width(2)))
        .map_err(|e| err(&e))?;
    area.draw(&PathElement::new(val.clone(), RED.stroke_width(2)))
        .map_err(|e| err(&e))?;
    for p in val {
        area.draw(&Circle::new(p, 4, RED.filled()))
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
