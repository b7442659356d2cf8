/*
 * lesion_app's lesion mode for OHIF 3.13 (1 of 5): the app's HTTP API as the mode uses it, on the page's own
 * origin only, and lesion masks as PNG both ways (encoded here around the browser's zlib, decoded by its canvas).
 * Masks are Uint8Array(rows * columns) of 0/1, row after row, on the photograph's stored pixel grid (the DICOM
 * frame's).
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

  // The PNG container (signature, IHDR, IDAT, IEND; W3C PNG specification) written here around the browser's own
  // zlib (CompressionStream "deflate" is the zlib format IDAT holds): a canvas's convertToBlob took 0.7 s a mask of
  // a photograph on a 2-core machine, this a few milliseconds.
  const PNG_SIGNATURE = Uint8Array.of(137, 80, 78, 71, 13, 10, 26, 10);
  const CRC_TABLE = Uint32Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });

  function crc32(bytes) {
    let c = 0xffffffff;
    for (let k = 0; k < bytes.length; k++) c = CRC_TABLE[(c ^ bytes[k]) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  }

  /** One PNG chunk: length, type, data, CRC of type and data. */
  function pngChunk(type, data) {
    const chunk = new Uint8Array(12 + data.length);
    const view = new DataView(chunk.buffer);
    view.setUint32(0, data.length);
    for (let k = 0; k < 4; k++) chunk[4 + k] = type.charCodeAt(k);
    chunk.set(data, 8);
    view.setUint32(8 + data.length, crc32(chunk.subarray(4, 8 + data.length)));
    return chunk;
  }

  /** The mask as an 8-bit grey PNG Blob, 255 where the lesion is (the app reads any nonzero pixel as lesion). */
  async function maskToPng(mask, columns, rows) {
    const scanlines = new Uint8Array(rows * (columns + 1)); // each row: filter type 0 (none), then its pixels
    for (let r = 0; r < rows; r++) {
      const row = r * (columns + 1) + 1;
      const from = r * columns;
      for (let c = 0; c < columns; c++) scanlines[row + c] = mask[from + c] ? 255 : 0;
    }
    const zlib = new Blob([scanlines]).stream().pipeThrough(new CompressionStream("deflate"));
    const compressed = new Uint8Array(await new Response(zlib).arrayBuffer());
    const header = new Uint8Array(13); // width, height, bit depth 8, colour type 0 (grey), deflate, filter 0, no interlace
    const size = new DataView(header.buffer);
    size.setUint32(0, columns);
    size.setUint32(4, rows);
    header[8] = 8;
    const parts = [
      PNG_SIGNATURE,
      pngChunk("IHDR", header),
      pngChunk("IDAT", compressed),
      pngChunk("IEND", new Uint8Array()),
    ];
    return new Blob(parts, { type: "image/png" });
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
