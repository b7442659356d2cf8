/*
 * lesion_app's lesion mode for OHIF 3.13 (1 of 5): the app's HTTP API as the mode uses it, on the page's own
 * origin only, and lesion masks as PNG both ways (the browser's canvas encodes and decodes them). Masks are
 * Uint8Array(rows * columns) of 0/1, row after row, on the photograph's stored pixel grid (the DICOM frame's).
 */
(() => {
  const lesionApp = window.lesionApp || {};
  window.lesionApp = lesionApp;

  const ANNOTATOR_KEY = "lesion_app.annotator";
  const STRATEGY_KEY = "lesion_app.strategy";

  /** A request the server refused or could not answer: `status` 0 when nothing answered. */
  class RequestFailed extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function call(url, options, what) {
    let response;
    try {
      response = await fetch(url, { credentials: "same-origin", ...options });
    } catch {
      throw new RequestFailed(0, `${what}: the server does not answer`);
    }
    if (response.ok) return response;
    let detail = response.statusText;
    try {
      const body = await response.json();
      detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail ?? body);
    } catch {
      // not JSON: the status text says it
    }
    throw new RequestFailed(response.status, `${what} failed (${response.status}): ${detail}`);
  }

  // -- masks as PNG ------------------------------------------------------------------------------------

  const LESION = 0xffffffff; // opaque white, one RGBA pixel as a little-endian Uint32
  const SKIN = 0xff000000; // opaque black

  /** The mask as a PNG Blob, encoded by the browser's canvas: opaque RGBA, white where the lesion is (the app reads
   * any nonzero colour of an opaque pixel as lesion). */
  async function maskToPng(mask, columns, rows) {
    const pixels = new Uint32Array(columns * rows);
    for (let k = 0; k < pixels.length; k++) pixels[k] = mask[k] ? LESION : SKIN;
    const canvas = new OffscreenCanvas(columns, rows);
    const image = new ImageData(new Uint8ClampedArray(pixels.buffer), columns, rows);
    canvas.getContext("2d").putImageData(image, 0, 0);
    return canvas.convertToBlob({ type: "image/png" });
  }

  /** The mask as `data:image/png;base64,...` (the click task's `previous_mask`). */
  async function maskToDataUrl(mask, columns, rows) {
    const bytes = new Uint8Array(await (await maskToPng(mask, columns, rows)).arrayBuffer());
    let text = "";
    for (let k = 0; k < bytes.length; k += 0x8000) text += String.fromCharCode(...bytes.subarray(k, k + 0x8000));
    return `data:image/png;base64,${btoa(text)}`;
  }

  /** A mask PNG (any nonzero pixel is lesion) as a 0/1 mask of (rows, columns); an Error for another size. */
  async function maskFromPng(blob, columns, rows) {
    const bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
    if (bitmap.width !== columns || bitmap.height !== rows) {
      throw new Error(`the mask is ${bitmap.width}x${bitmap.height}, the photograph ${columns}x${rows}`);
    }
    const canvas = new OffscreenCanvas(columns, rows);
    const context = canvas.getContext("2d", { willReadFrequently: true });
    context.drawImage(bitmap, 0, 0);
    const rgba = context.getImageData(0, 0, columns, rows).data;
    const mask = new Uint8Array(columns * rows);
    for (let k = 0; k < mask.length; k++) mask[k] = rgba[4 * k] || rgba[4 * k + 1] || rgba[4 * k + 2] ? 1 : 0;
    return mask;
  }

  // -- the app's routes -----------------------------------------------------------------------------------

  /** `POST /infer/<model>?image=<id>`: the mask (0/1) and the result's JSON. */
  async function infer(model, image, params, columns, rows) {
    const form = new FormData();
    form.append("params", JSON.stringify(params));
    const url = `/infer/${encodeURIComponent(model)}?image=${encodeURIComponent(image)}&output=all`;
    const response = await call(url, { method: "POST", body: form }, `${model}`);
    const type = response.headers.get("content-type") || "";
    if (!type.startsWith("multipart/")) throw new RequestFailed(502, `${model} returned no mask`);
    const parts = await response.formData();
    const result = JSON.parse((await textOf(parts.get("params"))) || "{}");
    return { mask: await maskFromPng(parts.get("image"), columns, rows), result };
  }

  async function textOf(part) {
    return typeof part === "string" ? part : part ? await part.text() : "";
  }

  /** The photograph's label with `tag` (`final`, the proposal `original`), or null when it has none. */
  async function label(image, tag, columns, rows) {
    const url = `/datastore/label?label=${encodeURIComponent(image)}&tag=${tag}`;
    const response = await fetch(url, { credentials: "same-origin" });
    if (response.status === 404) return null;
    if (!response.ok) throw new RequestFailed(response.status, `the ${tag} label could not be read`);
    return maskFromPng(await response.blob(), columns, rows);
  }

  /** The photograph's row of the worklist's data: predicted IoU, review mark, state, annotator. */
  async function photoInfo(image) {
    const response = await call(`/lesion/photo?image=${encodeURIComponent(image)}`, {}, "the photograph's state");
    return response.json();
  }

  /** `POST /lesion/label?image=<id>`: the mask becomes the photograph's label (a SEG with its annotator). */
  async function save(image, mask, columns, rows, annotator) {
    const form = new FormData();
    form.append("label", await maskToPng(mask, columns, rows), "label.png");
    form.append("params", JSON.stringify({ annotator }));
    const url = `/lesion/label?image=${encodeURIComponent(image)}`;
    return (await call(url, { method: "POST", body: form }, "saving")).json();
  }

  /** The strategy's next photograph for this annotator; null when none. `options.skip`: hand this one back first;
   * `options.after`: the one being saved meanwhile (not this answer, kept from no one). */
  async function nextPick(strategy, annotator, { skip, after } = {}) {
    const body = { annotator, ...(skip ? { skip } : {}), ...(after ? { after } : {}) };
    const options = { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) };
    const answer = await (await call(`/activelearning/${strategy}`, options, "the next photograph")).json();
    return answer?.id || null;
  }

  lesionApp.api = {
    RequestFailed,
    maskToPng,
    maskToDataUrl,
    maskFromPng,
    infer,
    label,
    photoInfo,
    save,
    nextPick,
    annotator: () => localStorage.getItem(ANNOTATOR_KEY) || "",
    strategy: () => localStorage.getItem(STRATEGY_KEY) || "random",
  };
})();
