//! The membership audit as a self-contained HTML page: per model, its attacks' ROC curves on
//! log–log axes (the low false-positive corner is where a membership attack matters; Carlini
//! et al. 2022) and a table of AUC, interval and TPR at 0.1 % and 1 % FPR. Aggregates only.

use std::fmt::Write;

use unpersonal_runtime::audit::membership::{MembershipReport, ModelResult};

use crate::cli::audit::html::escape;

/// The lowest rate the log axes show.
const FLOOR: f64 = 1e-3;

/// Line colours of the attacks, in turn.
const COLOURS: [&str; 10] = [
    "#1f6fb4", "#e07b00", "#2a9d3a", "#c62828", "#7b52ab", "#8c564b", "#d6569f", "#6f6f6f",
    "#a4a000", "#17a2b8",
];

/// The page of `report`, measured on `backend` in `seconds`.
pub fn render(report: &MembershipReport, backend: &str, seconds: f64) -> String {
    let mut page = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Unpersonal membership audit</title><style>\
         body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
         table{border-collapse:collapse;margin-bottom:1em}td,th{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:right;font-size:14px}\
         th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}figure{margin:0 0 1em 0}\
         </style></head><body><h1>Membership inference against the bundle's models</h1>",
    );
    let _ = write!(
        page,
        "<p>{} members (training records) against {} non-members (records no model saw){}; \
         bootstrap of {} resamples, seed {}; {} in {seconds:.0} s. AUC 0.5 and TPR equal to the \
         FPR mean the attacker learns nothing.</p>",
        report.members,
        report.non_members,
        if report.reference > 0 {
            format!(", {} further non-members calibrating the classifier loss", report.reference)
        } else {
            String::new()
        },
        report.resamples,
        report.seed,
        escape(backend),
    );
    for (label, worst) in [
        ("Highest AUC", &report.worst_auc),
        ("Highest TPR at 1 % FPR", &report.worst_tpr_at_fpr_1pct),
    ] {
        if let Some(w) = worst {
            let _ = write!(
                page,
                "<p><b>{label}</b>: {:.3} ({} {})</p>",
                w.value,
                escape(&w.model),
                escape(&w.attack)
            );
        }
    }
    for model in &report.models {
        let _ = write!(page, "<h2>{}</h2>", escape(&model.model));
        page.push_str(&roc_plot(model));
        page.push_str(
            "<table><tr><th>attack</th><th>AUC</th><th>95 % interval</th><th>TPR at 0.1 % FPR</th><th>TPR at 1 % FPR</th></tr>",
        );
        for a in &model.attacks {
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{:.3}</td><td>[{:.3}, {:.3}]</td><td>{:.4}</td><td>{:.4}</td></tr>",
                escape(&a.attack),
                a.auc,
                a.auc_ci[0],
                a.auc_ci[1],
                a.tpr_at_fpr_0_1pct,
                a.tpr_at_fpr_1pct
            );
        }
        page.push_str("</table>");
    }
    if !report.notes.is_empty() {
        page.push_str("<h2>Left out</h2><ul>");
        for note in &report.notes {
            let _ = write!(page, "<li>{}</li>", escape(note));
        }
        page.push_str("</ul>");
    }
    page.push_str("</body></html>\n");
    page
}

/// One model's ROC curves on log–log axes from [`FLOOR`] to 1, with the chance diagonal.
fn roc_plot(model: &ModelResult) -> String {
    let (w, h, pad, legend) = (420.0, 360.0, 40.0, 200.0);
    let decades = -FLOOR.log10();
    let x = |fpr: f64| pad + (w - 2.0 * pad) * (fpr.max(FLOOR).log10() / decades + 1.0);
    let y = |tpr: f64| h - pad - (h - 2.0 * pad) * (tpr.max(FLOOR).log10() / decades + 1.0);
    let mut svg = format!(
        r##"<figure><svg xmlns="http://www.w3.org/2000/svg" width="{tw}" height="{h}" viewBox="0 0 {tw} {h}" role="img" aria-label="ROC curves of the {m} attacks, log scale">"##,
        tw = w + legend,
        m = escape(&model.model)
    );
    for k in 0..=decades as i32 {
        let v = FLOOR * 10f64.powi(k);
        let (gx, gy) = (x(v), y(v));
        let _ = write!(
            svg,
            r##"<line x1="{gx:.1}" y1="{pad}" x2="{gx:.1}" y2="{b}" stroke="#eee"/><line x1="{pad}" y1="{gy:.1}" x2="{r}" y2="{gy:.1}" stroke="#eee"/><text x="{gx:.1}" y="{tb}" font-size="11" text-anchor="middle">{v}</text><text x="{tl}" y="{gy:.1}" font-size="11" text-anchor="end" dominant-baseline="middle">{v}</text>"##,
            b = h - pad,
            r = w - pad,
            tb = h - pad + 14.0,
            tl = pad - 4.0,
        );
    }
    let _ = write!(
        svg,
        r##"<rect x="{pad}" y="{pad}" width="{iw}" height="{iw2}" fill="none" stroke="#444"/><line x1="{pad}" y1="{b}" x2="{r}" y2="{pad}" stroke="#999" stroke-dasharray="4,3"/><text x="{cx}" y="{bl}" font-size="12" text-anchor="middle">false-positive rate</text><text x="12" y="{cy}" font-size="12" text-anchor="middle" transform="rotate(-90 12 {cy})">true-positive rate</text>"##,
        iw = w - 2.0 * pad,
        iw2 = h - 2.0 * pad,
        b = h - pad,
        r = w - pad,
        cx = w / 2.0,
        bl = h - 6.0,
        cy = h / 2.0,
    );
    for (i, a) in model.attacks.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let dash = if i >= COLOURS.len() { r#" stroke-dasharray="5,3""# } else { "" };
        let points: String = a
            .roc
            .iter()
            .filter(|[fpr, _]| *fpr > 0.0)
            .map(|&[fpr, tpr]| format!("{:.1},{:.1} ", x(fpr), y(tpr)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.5"{dash}/><text x="{lx}" y="{ly}" font-size="11" fill="{colour}">{name} ({auc:.3})</text>"#,
            lx = w + 4.0,
            ly = pad + 14.0 * i as f64,
            name = escape(&a.attack),
            auc = a.auc,
        );
    }
    svg.push_str(&format!(
        "</svg><figcaption>{}: ROC curves on log–log axes (dashed grey: chance)</figcaption></figure>",
        escape(&model.model)
    ));
    svg
}

#[cfg(test)]
mod tests {
    use unpersonal_runtime::audit::membership::AttackResult;

    use super::*;

    #[test]
    fn the_page_plots_every_attack_on_log_axes_and_escapes_names() {
        let attack = |name: &str, auc: f64| AttackResult {
            attack: name.into(),
            auc,
            auc_ci: [auc - 0.01, auc + 0.01],
            tpr_at_fpr_0_1pct: 0.002,
            tpr_at_fpr_1pct: 0.02,
            roc: vec![[0.0, 0.0], [0.001, 0.002], [0.01, 0.02], [1.0, 1.0]],
        };
        let report = MembershipReport {
            members: 10,
            non_members: 10,
            reference: 0,
            seed: 0,
            resamples: 100,
            sigmas: vec![0.1],
            secmi_sigmas: vec![],
            models: vec![ModelResult {
                model: "denoiser".into(),
                attacks: vec![attack("loss@0.1", 0.61), attack("<b>", 0.5)],
            }],
            worst_auc: None,
            worst_tpr_at_fpr_1pct: None,
            notes: vec!["classifier: none".into()],
        };
        let page = render(&report, "tract", 3.0);
        assert_eq!(page.matches("<polyline").count(), 2);
        assert!(page.contains("loss@0.1 (0.610)") && page.contains("&lt;b&gt; (0.500)"));
        assert!(!page.contains("<b> ("), "attack names are escaped");
        // FPR 1e-3 sits at the left edge, FPR 1 at the right; the point at FPR 0 is left out
        // of the log plot.
        // (FPR 1e-3, TPR 2e-3): y = 320 − 280 · (log10(0.002)/3 + 1) = 291.9.
        assert!(page.contains(r#"points="40.0,291.9 "#), "{page}");
        assert!(page.contains("380.0,40.0"), "(1, 1) is the top-right corner");
        assert!(page.contains("classifier: none"));
    }
}
