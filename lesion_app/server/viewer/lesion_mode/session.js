/*
 * lesion_app's lesion mode for OHIF 3.13 (2 of 5): one photograph's correction session. The viewport's labelmap
 * (one segment, "lesion") is read and replaced as a whole 0/1 mask; every change (Segment, a click, a brush
 * stroke, No lesion) first puts the mask and the clicks on the undo stack. Clicks go to the click task with
 * every earlier click of this photograph and the mask on screen as `previous_mask`.
 */
(() => {
  const lesionApp = window.lesionApp;
  const api = lesionApp.api;
  const TOOL_GROUP = "default";
  const CLICK_SLOP_PX = 4; // a press that moves further is a drag, not a click
  const UNDO_KEPT = 50;

  const session = {
    services: null,
    image: null, // the photograph's SeriesInstanceUID: the app's image id
    rows: 0,
    columns: 0,
    spacing: 1, // mm per pixel: cornerstone's brush radius is in mm
    viewportId: null,
    segmentationId: null,
    clicks: [], // {i, j, positive}: i the column, j the row on the stored pixel grid
    history: [], // {mask, clicks} before each change, newest last
    tool: null, // 'add' | 'remove' | 'brush' | 'eraser' | null
    radius: 10, // brush and eraser radius in pixels of the photograph
    queue: Promise.resolve(),
    busy: 0,
    info: {},
    clickLatencies: [], // ms from a click's mouse-up to its mask drawn, for lesion_app's benchmark
    requestLatencies: [], // ms of those the click task's request took (sent to answer decoded)
    nextSteps: [], // Save and next's phases, ms from the press: saved, picked, shown, ready (for the benchmark)
    pendingStep: null,
    measurements: null, // of the mask on screen, from the infer result that made it (area, longest diameter)
    ready: false,
    listeners: [],
    overlay: null,
  };
  lesionApp.session = session;

  const settings = () => window.config.lesionApp || {};
  const cs = () => window.cornerstone;
  const ct = () => window.cornerstoneTools;

  function viewport() {
    const engine = cs().getRenderingEngines()[0];
    return engine ? engine.getViewports()[0] : null;
  }

  function labelmapPixels() {
    const segmentation = ct().segmentation.state.getSegmentation(session.segmentationId);
    const imageId = segmentation?.representationData?.Labelmap?.imageIds?.[0];
    const image = imageId && cs().cache.getImage(imageId);
    return image ? image.getPixelData() : null;
  }

  /** The mask on screen, a copy (0/1). */
  function currentMask() {
    const pixels = labelmapPixels();
    const mask = new Uint8Array(session.rows * session.columns);
    if (pixels) for (let k = 0; k < mask.length; k++) mask[k] = pixels[k] ? 1 : 0;
    return mask;
  }

  /** Replaces the labelmap with `mask` and has it drawn. */
  function showMask(mask) {
    const pixels = labelmapPixels();
    if (!pixels) throw new Error("the labelmap is not ready");
    for (let k = 0; k < mask.length; k++) pixels[k] = mask[k] ? 1 : 0;
    ct().segmentation.triggerSegmentationEvents.triggerSegmentationDataModified(session.segmentationId);
    viewport()?.render();
    lesionApp.overlay.update();
  }

  function remember() {
    session.measurements = null; // the server's measurements are of the mask it returned, not an edited one
    session.history.push({ mask: currentMask(), clicks: session.clicks.slice() });
    if (session.history.length > UNDO_KEPT) session.history.shift();
  }

  function notify(message, type = "info") {
    session.services?.uiNotificationService?.show({ title: "Lesion", message, type, duration: 5000 });
    lesionApp.overlay.status(message, type);
  }

  function failed(error) {
    notify(error.message || String(error), "error");
  }

  /** Runs `job` after the ones before it (clicks in order, each with the newest mask). */
  function enqueue(job) {
    session.busy += 1;
    lesionApp.overlay.update();
    session.queue = session.queue
      .then(job)
      .catch(failed)
      .finally(() => {
        session.busy -= 1;
        lesionApp.overlay.update();
      });
    return session.queue;
  }

  // -- the viewport and its labelmap ------------------------------------------------------------------------

  async function prepare() {
    const { viewportGridService, displaySetService, segmentationService } = session.services;
    const vp = viewport();
    const data = vp?.getImageData?.();
    if (!data) return false;
    const viewportId = viewportGridService.getActiveViewportId();
    const uid = viewportGridService.getState().viewports.get(viewportId)?.displaySetInstanceUIDs?.[0];
    const displaySet = uid && displaySetService.getDisplaySetByUID(uid);
    if (!displaySet || !isAsked(displaySet) || vp.getCurrentImageId?.() !== displaySet.images?.[0]?.imageId) {
      return false; // after an in-page Save and next the grid still shows the photograph before for a while
    }
    lap("shown");
    session.viewportId = viewportId;
    session.image = displaySet.SeriesInstanceUID;
    [session.columns, session.rows] = data.dimensions;
    session.spacing = data.spacing?.[0] || 1;
    const segmentationId = `lesion-${session.image}`;
    if (!segmentationService.getSegmentation(segmentationId)) {
      await segmentationService.createLabelmapForDisplaySet(displaySet, {
        segmentationId,
        label: "lesion",
        segments: { 1: { label: "lesion", active: true } },
      });
    }
    await segmentationService.addSegmentationRepresentation(viewportId, { segmentationId, type: "Labelmap" });
    session.segmentationId = segmentationId;
    listen(vp.element);
    lesionApp.markers.mount(vp.element);
    session.ready = true;
    session.info = await api.photoInfo(session.image);
    const shown = await startingMask(session.info);
    if (shown) showMask(shown);
    setRadius(session.radius);
    lesionApp.overlay.update();
    document.body.dataset.lesionReady = session.image;
    if (lap("ready")) session.nextSteps.push(session.pendingStep);
    session.pendingStep = null;
    return true;
  }

  /** Notes the time of a phase of the Save and next under way, if one is (true then). */
  function lap(phase) {
    if (!session.pendingStep) return false;
    session.pendingStep[phase] = performance.now() - session.pendingStep.pressed;
    return true;
  }

  /** Whether the display set is the photograph the page's URL asks for (any, when it names none). */
  function isAsked(displaySet) {
    const asked = new URLSearchParams(window.location.search).get("SeriesInstanceUIDs");
    return !asked || asked.split(",").includes(displaySet.SeriesInstanceUID);
  }

  /** The newest correction, else the model's proposal, else nothing (as the worklist's row says). */
  async function startingMask(info) {
    const { image, columns, rows } = session;
    const tag = info.label ? "final" : info.proposal ? "original" : null;
    return tag ? api.label(image, tag, columns, rows) : null;
  }

  function waitForViewport() {
    let tries = 0;
    const timer = setInterval(async () => {
      tries += 1;
      if (session.ready || tries > 600) return clearInterval(timer);
      try {
        if (await prepare()) clearInterval(timer);
      } catch (error) {
        clearInterval(timer);
        failed(error);
      }
    }, 200);
  }

  // -- tools: clicks, brush, eraser -------------------------------------------------------------------------

  function toolGroup() {
    return ct().ToolGroupManager.getToolGroup(TOOL_GROUP);
  }

  function setTool(tool) {
    const group = toolGroup();
    if (!group) return;
    const primary = [{ mouseButton: ct().Enums.MouseBindings.Primary }];
    for (const name of ["CircularBrush", "CircularEraser"]) group.setToolPassive(name);
    if (tool === "brush") group.setToolActive("CircularBrush", { bindings: primary });
    if (tool === "eraser") group.setToolActive("CircularEraser", { bindings: primary });
    session.tool = tool;
    setRadius(session.radius);
    session.services?.toolbarService?.refreshToolbarState?.({ viewportId: session.viewportId });
    lesionApp.overlay.update();
  }

  function setRadius(pixels) {
    session.radius = Math.max(1, Math.min(200, Math.round(pixels)));
    const segmentationUtilities = ct().utilities.segmentation;
    segmentationUtilities.setBrushSizeForToolGroup(TOOL_GROUP, session.radius * session.spacing);
    lesionApp.overlay.update();
  }

  /** The pixel (i column, j row) under a page point, or null outside the photograph. */
  function pixelAt(clientX, clientY) {
    const vp = viewport();
    const data = vp.getImageData();
    const rect = vp.canvas.getBoundingClientRect();
    const ijk = data.imageData.worldToIndex(vp.canvasToWorld([clientX - rect.left, clientY - rect.top]));
    const i = Math.round(ijk[0]);
    const j = Math.round(ijk[1]);
    return i >= 0 && j >= 0 && i < session.columns && j < session.rows ? { i, j } : null;
  }

  /** The canvas point (x, y in CSS pixels of the viewport's canvas) of pixel (i column, j row). */
  function canvasAt(i, j) {
    const vp = viewport();
    return vp.worldToCanvas(vp.getImageData().imageData.indexToWorld([i, j, 0]));
  }

  function listen(element) {
    let down = null;
    const onDown = (event) => {
      if (event.button !== 0) return;
      down = { x: event.clientX, y: event.clientY };
      if (session.tool === "brush" || session.tool === "eraser") remember(); // before the stroke paints
    };
    const onUp = (event) => {
      if (event.button !== 0 || !down) return;
      const moved = Math.hypot(event.clientX - down.x, event.clientY - down.y);
      down = null;
      if ((session.tool === "add" || session.tool === "remove") && moved <= CLICK_SLOP_PX) {
        click(event.clientX, event.clientY, session.tool === "add");
      }
      if (session.tool === "brush" || session.tool === "eraser") setTimeout(() => lesionApp.overlay.update(), 50);
    };
    element.addEventListener("pointerdown", onDown, true);
    element.addEventListener("pointerup", onUp, true);
    session.listeners.push(() => {
      element.removeEventListener("pointerdown", onDown, true);
      element.removeEventListener("pointerup", onUp, true);
    });
  }

  /** A positive or negative click at a page point: sent with every earlier click and the mask on screen. */
  function click(clientX, clientY, positive) {
    const at = pixelAt(clientX, clientY);
    if (!at) {
      notify("That click was outside the photograph: nothing was sent.", "warning");
      return Promise.resolve();
    }
    const pressed = performance.now();
    return enqueue(async () => {
      const before = currentMask();
      remember();
      session.clicks.push({ ...at, positive });
      lesionApp.markers.draw(); // the click is shown while the model works
      const points = (sign) => session.clicks.filter((c) => c.positive === sign).map((c) => [c.i, c.j, 0]);
      const params = {
        foreground: points(true),
        background: points(false),
        previous_mask: await api.maskToDataUrl(before, session.columns, session.rows),
      };
      try {
        const sent = performance.now();
        const { mask, result } = await api.infer(
          settings().clickModel,
          session.image,
          params,
          session.columns,
          session.rows,
        );
        session.requestLatencies.push(performance.now() - sent);
        showMask(mask);
        session.measurements = result.measurements || null;
        const drawn = () => session.clickLatencies.push(performance.now() - pressed); // the next frame: painted
        requestAnimationFrame(() => requestAnimationFrame(drawn));
      } catch (error) {
        const last = session.history.pop();
        session.clicks = last.clicks;
        lesionApp.markers.draw();
        throw error;
      }
    });
  }

  // -- the commands -----------------------------------------------------------------------------------------

  function segment() {
    return enqueue(async () => {
      const model = settings().segmentModel;
      const { mask, result } = await api.infer(model, session.image, {}, session.columns, session.rows);
      remember();
      showMask(mask);
      session.measurements = result.measurements || null;
      notify(`${model}'s mask`);
    });
  }

  function undo() {
    const last = session.history.pop();
    if (!last) return notify("Nothing to undo.");
    session.clicks = last.clicks;
    session.measurements = null;
    showMask(last.mask);
  }

  async function save() {
    let saved = null;
    await enqueue(async () => {
      const annotator = api.annotator();
      const answer = await api.save(session.image, currentMask(), session.columns, session.rows, annotator);
      saved = answer;
      session.info = { ...session.info, state: "corrected", annotator: answer.annotator };
      notify(`Saved as the label (by ${answer.annotator}).`, "success");
      new BroadcastChannel("lesion_app").postMessage({ saved: session.image });
    });
    return saved;
  }

  /** Replaces the mask with `mask` as one undoable edit (what a brush stroke does). */
  function edit(mask) {
    remember();
    showMask(mask);
  }

  function noLesion() {
    edit(new Uint8Array(session.rows * session.columns));
    return save();
  }

  /** The next pick's link (null when none is left); `options` as `api.nextPick`'s. */
  async function nextLink(options) {
    const next = await api.nextPick(api.strategy(), api.annotator(), options);
    if (!next) return null;
    const { link } = await api.photoInfo(next);
    lap("picked");
    return link;
  }

  function openNext(link) {
    if (!link) return notify("No photograph left to label.");
    openInPage(link);
  }

  /** Opens the lesion mode's `link` without loading the page again: OHIF's router (React Router) follows the
   * browser's history, and its mode route exits and enters the mode on the new study; a link elsewhere loads. */
  function openInPage(link) {
    const target = new URL(link, window.location.href);
    if (target.origin !== window.location.origin || target.pathname !== window.location.pathname) {
      return window.location.assign(target.href);
    }
    const before = window.history.state || {};
    const state = { usr: null, key: Math.random().toString(36).slice(2, 10), idx: (before.idx ?? 0) + 1 };
    window.history.pushState(state, "", target.pathname + target.search);
    window.dispatchEvent(new PopStateEvent("popstate", { state }));
  }

  /** Saves, and asks for the next pick while the label is saved; opens it once the save succeeded. */
  async function saveNext() {
    session.pendingStep = { pressed: performance.now() };
    const link = nextLink({ after: session.image }).catch((error) => ({ error }));
    if (!(await save())) {
      session.pendingStep = null;
      return;
    }
    lap("saved");
    const next = await link;
    if (next?.error) return failed(next.error);
    openNext(next);
  }

  function skip() {
    return nextLink({ skip: session.image }).then(openNext, failed);
  }

  /** OHIF's back arrow leads to the app's worklist (OHIF's own study list is not the clinician's list). */
  function onBack(event) {
    if (!event.target.closest?.('[data-cy="return-to-work-list"]')) return;
    event.preventDefault();
    event.stopImmediatePropagation();
    window.location.assign("/worklist");
  }

  function enter(services) {
    Object.assign(session, {
      services,
      ready: false,
      clicks: [],
      history: [],
      tool: null,
      info: {},
      measurements: null,
    });
    lesionApp.overlay.mount();
    lesionApp.keys.mount();
    document.addEventListener("click", onBack, true);
    session.listeners.push(() => document.removeEventListener("click", onBack, true));
    waitForViewport();
  }

  function exit() {
    for (const stop of session.listeners.splice(0)) stop();
    lesionApp.keys.unmount();
    lesionApp.overlay.unmount();
    lesionApp.markers.unmount();
    session.ready = false;
    delete document.body.dataset.lesionReady;
  }

  Object.assign(session, {
    enter,
    exit,
    segment,
    click,
    undo,
    save,
    noLesion,
    edit,
    saveNext,
    skip,
    setTool,
    setRadius,
    currentMask,
    showMask,
    pixelAt,
    canvasAt,
  });
})();
