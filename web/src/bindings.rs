//! The JavaScript face of [`Studio`] (wasm32 only), called from the page's Web Worker
//! (`web/www/worker.js`). Errors become JavaScript exceptions carrying the message.

use js_sys::{Function, Map, Uint8Array};
use unpersonal_runtime::bundle::Bundle;
use wasm_bindgen::prelude::*;

use crate::references;
use crate::studio::{Choices, Studio};

fn js(error: String) -> JsError {
    JsError::new(&error)
}

/// A verified bundle with its picked references and the release so far.
#[wasm_bindgen]
pub struct Session(Studio);

#[wasm_bindgen]
impl Session {
    /// Loads the bundle `name` from `files`: a `Map` from each file's name (`bundle.json` and
    /// the ONNX files it names) to its bytes (`Uint8Array`).
    #[wasm_bindgen(constructor)]
    pub fn new(name: &str, files: &Map) -> Result<Session, JsError> {
        let studio = Studio::load(name, |path| {
            let file = path.strip_prefix(name).unwrap_or(path).to_string_lossy().into_owned();
            let bytes = files.get(&JsValue::from_str(&file));
            if bytes.is_undefined() {
                return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "the page could not fetch it"));
            }
            Ok(Uint8Array::new(&bytes).to_vec())
        });
        Ok(Session(studio.map_err(js)?))
    }

    /// The bundle, its defaults and thresholds, as JSON.
    pub fn info(&self) -> String {
        self.0.info().to_string()
    }

    /// Adds a reference image (PNG/JPEG bytes); returns a notice when it was converted.
    #[wasm_bindgen(js_name = addReference)]
    pub fn add_reference(&mut self, name: &str, bytes: &[u8]) -> Result<Option<String>, JsError> {
        self.0.add_reference(name, bytes).map_err(js)
    }

    /// Forgets every reference image and the release.
    #[wasm_bindgen(js_name = clearReferences)]
    pub fn clear_references(&mut self) {
        self.0.clear_references();
    }

    /// Labels the references from a filelist's text.
    #[wasm_bindgen(js_name = labelReferences)]
    pub fn label_references(&mut self, list_name: &str, text: &str) -> Result<(), JsError> {
        self.0.label_references(list_name, text).map_err(js)
    }

    /// Reference images picked so far.
    #[wasm_bindgen(js_name = referenceCount)]
    pub fn reference_count(&self) -> usize {
        self.0.reference_count()
    }

    /// Sets the sampler choices (JSON: candidates, guidance, steps, seed, rounds) and starts
    /// a new release.
    pub fn configure(&mut self, choices: &str) -> Result<(), JsError> {
        let choices: Choices = serde_json::from_str(choices).map_err(|e| js(format!("bad settings: {e}")))?;
        self.0.configure(&choices).map_err(js)
    }

    /// Embeds and pseudo-conditions every reference; starts a new release.
    pub fn prepare(&mut self) -> Result<(), JsError> {
        self.0.prepare().map_err(js)
    }

    /// Draws and gates reference `k`'s images, calling `on_step(round, done, total)` after
    /// each denoising step; returns what it gave as JSON.
    pub fn draw(&mut self, k: usize, on_step: &Function) -> Result<String, JsError> {
        let mut step = |round: usize, done: usize, total: usize| {
            // Progress is best effort: a failing callback must not stop the gate.
            let _ = on_step.call3(&JsValue::NULL, &round.into(), &done.into(), &total.into());
        };
        let drawn = self.0.draw(k, &mut step).map_err(js)?;
        serde_json::to_string(&drawn).map_err(|e| js(e.to_string()))
    }

    /// The aggregate report of the release so far, as JSON.
    pub fn report(&self) -> String {
        self.0.report().to_string()
    }

    /// The release so far as zip bytes (images, filelist.txt, report.json).
    pub fn zip(&self) -> Result<Vec<u8>, JsError> {
        self.0.zip().map_err(js)
    }
}

/// The files of a bundle besides `bundle.json`, from its text.
#[wasm_bindgen(js_name = bundleFiles)]
pub fn bundle_files(json: &str) -> Result<Vec<String>, JsError> {
    let bundle = Bundle::from_json(json).map_err(|e| js(format!("bundle.json: {e}")))?;
    let mut files: Vec<String> = bundle.models.values().map(|m| m.file.clone()).collect();
    files.sort();
    files.dedup();
    Ok(files)
}

/// The image paths a filelist names.
#[wasm_bindgen(js_name = filelistPaths)]
pub fn filelist_paths(list_name: &str, text: &str) -> Result<Vec<String>, JsError> {
    references::filelist_paths(list_name, text).map_err(js)
}
