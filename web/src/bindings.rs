//! The JavaScript face of [`Studio`] (wasm32 only), called from the page's Web Worker
//! (`web/www/worker.js`). Errors become JavaScript exceptions carrying the message.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Function, Map, Promise, Uint8Array};
use unpersonal_runtime::backend::webgpu::WebGpu;
use unpersonal_runtime::bundle::Bundle;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::references;
use crate::studio::{Choices, Studio};

fn js(error: String) -> JsError {
    JsError::new(&error)
}

/// A verified bundle with its picked references and the release so far.
#[wasm_bindgen]
pub struct Session(Rc<RefCell<Studio>>);

/// Loads the bundle `name` from `files` (a `Map` from each file's name — `bundle.json` and the
/// ONNX files it names — to its bytes, `Uint8Array`); with `gpu`, the denoising loop runs on
/// WebGPU, and the promise is refused when the browser has no usable adapter (the caller
/// then opens a CPU session and says why).
#[wasm_bindgen(js_name = openSession)]
pub async fn open_session(name: String, files: Map, gpu: bool) -> Result<Session, JsError> {
    let read = reader(&name, &files);
    let studio = if gpu {
        let gpu = WebGpu::open().await.map_err(|e| js(format!("WebGPU: {e}")))?;
        Studio::load(&name, read, Some(&gpu))
    } else {
        Studio::load(&name, read, None)
    };
    Ok(Session(Rc::new(RefCell::new(studio.map_err(js)?))))
}

/// Reads the files of the bundle `name` from the page's `files` (see [`open_session`]).
pub(crate) fn reader<'a>(
    name: &'a str,
    files: &'a Map,
) -> impl Fn(&std::path::Path) -> std::io::Result<Vec<u8>> + 'a {
    move |path| {
        let file = path.strip_prefix(name).unwrap_or(path).to_string_lossy().into_owned();
        let bytes = files.get(&JsValue::from_str(&file));
        if bytes.is_undefined() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the page could not fetch it",
            ));
        }
        Ok(Uint8Array::new(&bytes).to_vec())
    }
}

#[wasm_bindgen]
impl Session {
    fn studio(&self) -> Result<std::cell::RefMut<'_, Studio>, JsError> {
        self.0.try_borrow_mut().map_err(|_| js("the session is busy drawing".into()))
    }

    /// The bundle, its defaults and thresholds, as JSON.
    pub fn info(&self) -> Result<String, JsError> {
        Ok(self.studio()?.info().to_string())
    }

    /// Adds a reference image (PNG/JPEG bytes); returns a notice when it was converted.
    #[wasm_bindgen(js_name = addReference)]
    pub fn add_reference(&self, name: &str, bytes: &[u8]) -> Result<Option<String>, JsError> {
        self.studio()?.add_reference(name, bytes).map_err(js)
    }

    /// Forgets every reference image and the release.
    #[wasm_bindgen(js_name = clearReferences)]
    pub fn clear_references(&self) -> Result<(), JsError> {
        self.studio()?.clear_references();
        Ok(())
    }

    /// Labels the references from a filelist's text.
    #[wasm_bindgen(js_name = labelReferences)]
    pub fn label_references(&self, list_name: &str, text: &str) -> Result<(), JsError> {
        self.studio()?.label_references(list_name, text).map_err(js)
    }

    /// Reference images picked so far.
    #[wasm_bindgen(js_name = referenceCount)]
    pub fn reference_count(&self) -> Result<usize, JsError> {
        Ok(self.studio()?.reference_count())
    }

    /// Sets the sampler choices (JSON: candidates, guidance, steps, seed, rounds) and starts
    /// a new release.
    pub fn configure(&self, choices: &str) -> Result<(), JsError> {
        let choices: Choices =
            serde_json::from_str(choices).map_err(|e| js(format!("bad settings: {e}")))?;
        self.studio()?.configure(&choices).map_err(js)
    }

    /// Embeds and pseudo-conditions every reference; starts a new release.
    pub fn prepare(&self) -> Result<(), JsError> {
        self.studio()?.prepare().map_err(js)
    }

    /// Draws and gates reference `k`'s images, calling `on_step(round, done, total)` after
    /// each denoising step; the promise gives what it drew as JSON.
    pub fn draw(&self, k: usize, on_step: Function) -> Promise {
        let studio = self.0.clone();
        future_to_promise(async move {
            let mut studio = studio
                .try_borrow_mut()
                .map_err(|_| JsValue::from(js("the session is busy drawing".into())))?;
            let mut step = |round: usize, done: usize, total: usize| {
                // Progress is best effort: a failing callback must not stop the gate.
                let _ = on_step.call3(&JsValue::NULL, &round.into(), &done.into(), &total.into());
            };
            let drawn = studio.draw(k, &mut step).await.map_err(|e| JsValue::from(js(e)))?;
            serde_json::to_string(&drawn)
                .map(JsValue::from)
                .map_err(|e| JsValue::from(js(e.to_string())))
        })
    }

    /// The aggregate report of the release so far, as JSON.
    pub fn report(&self) -> Result<String, JsError> {
        Ok(self.studio()?.report().to_string())
    }

    /// The release so far as zip bytes (images, filelist.txt, report.json).
    pub fn zip(&self) -> Result<Vec<u8>, JsError> {
        self.studio()?.zip().map_err(js)
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
