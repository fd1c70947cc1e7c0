//! The audit's two renderings of `audit.json`: a self-contained HTML page (inline SVG plots,
//! PNG data URLs, no external scripts or fonts) and the plain-text summary the CLI prints.

use std::fmt::Write;

use anyhow::Context;
use base64::Engine;
use serde_json::Value;
use unpersonal_runtime::data::Dataset;
use unpersonal_runtime::generate::interleaved;

use unpersonal_runtime::pixels::encode_png;

/// One line of the headline table: what, the release's number, the baseline, the verdict.
struct Row {
    what: &'static str,
    release: String,
    baseline: String,
    verdict: String,
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn percent(v: &Value) -> String {
    format!("{:.2} %", 100.0 * num(v))
}

/// A share with its interval, as `1.20 % [0.9, 1.6]`.
fn share(v: &Value) -> String {
    format!(
        "{:.2} % [{:.2}, {:.2}] ({}/{})",
        100.0 * num(&v["share"]),
        100.0 * num(&v["ci95"]["lower"]),
        100.0 * num(&v["ci95"]["upper"]),
        v["flagged"],
        v["of"]
    )
}

/// The headline rows, each with a plain verdict.
fn rows(r: &Value) -> Vec<Row> {
    let mut rows = Vec::new();
    let u = &r["utility"];
    let gap = &u["gap_points"];
    let metric = u["metric"].as_str().unwrap_or("accuracy");
    rows.push(Row {
        what: "Utility: classifier trained on the release vs on the real images",
        release: format!("{metric} {}", percent(&u["synthetic"]["score"])),
        baseline: format!("{metric} {}", percent(&u["real"]["score"])),
        verdict: format!(
            "gap {:+.2} points [{:+.2}, {:+.2}]: {}",
            num(&gap["estimate"]),
            num(&gap["lower"]),
            num(&gap["upper"]),
            if num(&gap["estimate"]) >= -1.0 {
                "within one point"
            } else {
                "FALLS SHORT of one point"
            }
        ) + if u["recipe_warning"].is_string() {
            " — recipe too short to judge (see audit.json: utility.recipe_warning)"
        } else {
            ""
        },
    });
    let f = &r["fidelity"];
    rows.push(Row {
        what: "Fréchet distance to the test set (classifier features)",
        release: format!("{:.4}", num(&f["frechet_release_vs_test"]["distance"])),
        baseline: format!("{:.4} (real images)", num(&f["frechet_real_vs_test"]["distance"])),
        verdict: format!(
            "{:.1}× the real floor",
            num(&f["frechet_release_vs_test"]["distance"])
                / num(&f["frechet_real_vs_test"]["distance"])
        ),
    });
    let c = &f["class_consistency"];
    rows.push(Row {
        what: "Class consistency: the bundle's classifier agrees with the drawn-for labels",
        release: format!(
            "{} {}",
            c["release"]["metric"].as_str().unwrap_or(""),
            percent(&c["release"]["value"])
        ),
        baseline: format!("{} (the real images)", percent(&c["real"]["value"])),
        verdict: format!(
            "{:+.2} points",
            100.0 * (num(&c["release"]["value"]) - num(&c["real"]["value"]))
        ),
    });
    let m = &f["manifold_release_vs_real"];
    rows.push(Row {
        what: "Precision / recall of the manifold (k-NN, vs the real images)",
        release: format!("{:.3} / {:.3}", num(&m["precision"]), num(&m["recall"])),
        baseline: "1 / 1 ideal".into(),
        verdict: format!("k = {}", m["k"]),
    });
    let reid = &r["reidentification"];
    let above = num(&reid["release"]["ci95"]["lower"]) > num(&reid["holdout"]["ci95"]["upper"]);
    rows.push(Row {
        what: "Re-identified: linked to a training image by the re-id model",
        release: share(&reid["release"]),
        baseline: share(&reid["holdout"]),
        verdict: if above {
            "ABOVE the holdout baseline".into()
        } else {
            "not above the holdout baseline".into()
        },
    });
    for (key, name) in [("pixels", "DCR, pixels"), ("embedding", "DCR, re-id embedding")] {
        let d = &r["dcr"][key];
        let what = if key == "pixels" {
            "Distance to closest record, pixels (5th percentile)"
        } else {
            "Distance to closest record, re-id embedding (5th pct.)"
        };
        let copied = num(&d["dcr_ratio"]) < 1.0 && num(&d["test"]["p_value"]) < 0.05;
        rows.push(Row {
            what,
            release: format!("{:.3}", num(&d["released_p5"])),
            baseline: format!("{:.3}", num(&d["holdout_p5"])),
            verdict: format!(
                "{name} ratio {:.3}, Mann–Whitney p {:.3}: {}",
                num(&d["dcr_ratio"]),
                num(&d["test"]["p_value"]),
                if copied {
                    "released images lie CLOSER to training images than new ones do"
                } else {
                    "no closer than new images"
                }
            ),
        });
    }
    for mode in r["singling_out"]["modes"].as_array().into_iter().flatten() {
        let risk = &mode["risk"];
        rows.push(Row {
            what: if mode["mode"] == "univariate" {
                "Singling-out risk, univariate predicates"
            } else {
                "Singling-out risk, multivariate predicates (3 columns)"
            },
            release: format!(
                "attack {:.3} ± {:.3}",
                num(&mode["attack"]["value"]),
                num(&mode["attack"]["error"])
            ),
            baseline: format!(
                "control {:.3} ± {:.3}; naive {:.3}",
                num(&mode["control"]["value"]),
                num(&mode["control"]["error"]),
                num(&mode["baseline"]["value"])
            ),
            verdict: format!(
                "risk {:.3} [{:.3}, {:.3}]: {}",
                num(&risk["estimate"]),
                num(&risk["lower"]),
                num(&risk["upper"]),
                if num(&risk["lower"]) > 0.0 {
                    "RISK above the control"
                } else {
                    "interval contains 0"
                }
            ),
        });
    }
    let mem = &r["memorisation"];
    rows.push(Row {
        what: "Memorised (Carlini et al.: nearest < ⅓ of the 50-NN mean)",
        release: share(&mem["release"]),
        baseline: share(&mem["holdout"]),
        verdict: if num(&mem["release"]["ci95"]["lower"]) > num(&mem["holdout"]["ci95"]["upper"]) {
            "ABOVE the holdout baseline".into()
        } else {
            "not above the holdout baseline".into()
        },
    });
    rows
}

/// The text summary printed by `unpersonal audit`.
pub fn summary(report: &Value) -> String {
    let mut text = String::new();
    for row in rows(report) {
        let _ = writeln!(
            text,
            "{}\n    release {} | baseline {} | {}",
            row.what, row.release, row.baseline, row.verdict
        );
    }
    text
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Density histograms of two distance samples as one inline SVG (release blue, holdout orange).
fn histogram(title: &str, release: &[f64], holdout: &[f64]) -> String {
    const BINS: usize = 40;
    let (w, h, pad) = (560.0, 220.0, 30.0);
    let top = release.iter().chain(holdout).copied().fold(0.0f64, f64::max).max(1e-12);
    let density = |v: &[f64]| -> Vec<f64> {
        let mut counts = vec![0.0; BINS];
        for &x in v {
            counts[((x / top * BINS as f64) as usize).min(BINS - 1)] += 1.0;
        }
        counts.iter().map(|c| c / v.len().max(1) as f64).collect()
    };
    let (a, b) = (density(release), density(holdout));
    let peak = a.iter().chain(&b).copied().fold(0.0f64, f64::max).max(1e-12);
    let path = |d: &[f64]| -> String {
        let mut p = String::new();
        for (i, v) in d.iter().enumerate() {
            let (x0, x1) = (
                pad + (w - 2.0 * pad) * i as f64 / BINS as f64,
                pad + (w - 2.0 * pad) * (i + 1) as f64 / BINS as f64,
            );
            let y = h - pad - (h - 2.0 * pad) * v / peak;
            let _ = write!(p, "{}{x0:.1},{y:.1} L{x1:.1},{y:.1} ", if i == 0 { "M" } else { "L" });
        }
        p
    };
    format!(
        r##"<figure><svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{t}">
<line x1="{pad}" y1="{yb}" x2="{xr}" y2="{yb}" stroke="#444"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{yb}" stroke="#444"/>
<path d="{pa}" fill="none" stroke="#1f6fb4" stroke-width="2"/><path d="{pb}" fill="none" stroke="#e07b00" stroke-width="2" stroke-dasharray="5,3"/>
<text x="{pad}" y="{yl}" font-size="11">0</text><text x="{xr}" y="{yl}" font-size="11" text-anchor="end">{top:.3}</text>
<text x="{xr}" y="18" font-size="12" text-anchor="end"><tspan fill="#1f6fb4">— release</tspan>  <tspan fill="#e07b00">- - holdout</tspan></text>
</svg><figcaption>{t}: share of images per distance to the closest training image</figcaption></figure>"##,
        t = escape(title),
        yb = h - pad,
        xr = w - pad,
        yl = h - pad + 16.0,
        pa = path(&a),
        pb = path(&b),
    )
}

/// An `<img>` of row `i` of `data` as a PNG data URL, scaled up for the eye.
fn thumbnail(data: &Dataset, i: usize) -> anyhow::Result<String> {
    let pixels = data.batch(&[i]);
    let png = encode_png(
        &interleaved(pixels.index_axis(ndarray::Axis(0), 0)),
        data.channels,
        data.height,
        data.width,
    )
    .map_err(anyhow::Error::msg)?;
    let url = base64::engine::general_purpose::STANDARD.encode(png);
    Ok(format!(
        r#"<img src="data:image/png;base64,{url}" width="{}" height="{}" alt="" style="image-rendering:pixelated">"#,
        data.width * 3,
        data.height * 3
    ))
}

/// The HTML page of `report`; `histograms` holds the DCR samples, `release` and `train` the
/// images of the memorisation gallery.
pub fn render(
    report: &Value,
    histograms: &Value,
    release: &Dataset,
    train: &Dataset,
) -> anyhow::Result<String> {
    let mut page = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Unpersonal audit</title><style>\
         body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
         table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.4em;text-align:left;vertical-align:top;font-size:14px}\
         th{background:#f3f3f3}.warn{background:#fff4e0;padding:.6em;border-left:4px solid #e07b00}figure{display:inline-block;margin:0 1em 1em 0}\
         .pair{display:inline-block;margin:0 1em 1em 0;text-align:center;font-size:12px}pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:12px}\
         </style></head><body><h1>Unpersonal audit</h1>",
    );
    let data = &report["data"];
    let _ = write!(
        page,
        "<p>Release <code>{}</code>: <b>{}</b> images, bundle <code>{}</code>, backend {}. Training records: {} ({} images); holdout (never seen): {} ({}); test: {} ({}); real images the release stands for: {} ({}). Audit took {:.0} s.</p>",
        escape(report["release"]["dir"].as_str().unwrap_or("")),
        report["release"]["images"],
        escape(report["bundle"]["name"].as_str().unwrap_or("")),
        escape(report["backend"].as_str().unwrap_or("")),
        escape(data["train"]["name"].as_str().unwrap_or("")),
        data["train"]["images"],
        escape(data["holdout"]["name"].as_str().unwrap_or("")),
        data["holdout"]["images"],
        escape(data["test"]["name"].as_str().unwrap_or("")),
        data["test"]["images"],
        escape(data["real"]["name"].as_str().unwrap_or("")),
        data["real"]["images"],
        num(&report["seconds"]),
    );
    page.push_str("<p class=\"warn\">This page shows real training images next to the released images closest to them: it is personal data wherever the training data is. Keep it where the training data may be.</p>");
    page.push_str("<h2>Summary</h2><table><tr><th>What</th><th>Release</th><th>Baseline</th><th>Verdict</th></tr>");
    for row in rows(report) {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(row.what),
            escape(&row.release),
            escape(&row.baseline),
            escape(&row.verdict)
        );
    }
    page.push_str("</table><p>Baselines are the same measurement for people the models never saw (holdout), or for real data. Intervals are 95 %: Wilson for shares, paired bootstrap for the utility gap, Anonymeter's propagated error for singling-out risk.</p>");

    page.push_str("<h2>Distance to closest record</h2>");
    let samples = |v: &Value| -> Vec<f64> {
        v.as_array().into_iter().flatten().filter_map(Value::as_f64).collect()
    };
    for (key, title) in [("pixels", "Pixel space"), ("embedding", "Re-identification embedding")] {
        page.push_str(&histogram(
            title,
            &samples(&histograms[key]["release"]),
            &samples(&histograms[key]["holdout"]),
        ));
    }

    page.push_str("<h2>Released images closest to a training image</h2><p>The lowest Carlini ratios (distance to the nearest training image over the mean distance to its 50 nearest): each released image beside its nearest training image.</p>");
    for row in report["memorisation"]["worst"].as_array().into_iter().flatten() {
        let (i, j) = (
            row["index"].as_u64().context("gallery row without index")? as usize,
            row["nearest_train"].as_u64().context("gallery row without nearest_train")? as usize,
        );
        let _ = write!(
            page,
            "<div class=\"pair\">{} {}<br>released #{i} · training #{j}<br>ratio {:.3}, distance {:.2}</div>",
            thumbnail(release, i)?,
            thumbnail(train, j)?,
            num(&row["ratio"]),
            num(&row["distance"])
        );
    }
    let _ = writeln!(
        page,
        "<h2>Every number</h2><details><summary>audit.json</summary><pre>{}</pre></details></body></html>",
        escape(&serde_json::to_string_pretty(report)?)
    );
    Ok(page)
}
