/*
 * lesion_app's lesion mode for OHIF 3.13 (4 of 5): the photograph's clicks drawn over the viewport, a green ring for
 * a positive click and a red one for a negative click, where they lie on the photograph; they follow zoom and pan
 * (redrawn after every frame cornerstone renders) and Undo.
 */
(() => {
  const lesionApp = window.lesionApp;
  const SVG = "http://www.w3.org/2000/svg";
  const RING_RADIUS_PX = 6; // screen pixels, whatever the zoom
  const COLOURS = { true: "#35d05a", false: "#ff4d4d" };

  let layer = null;
  let element = null;
  let rendered = null;

  /** Draws the session's clicks (`{i, j, positive}` on the photograph's pixel grid) as SVG circles. */
  function draw() {
    if (!layer) return;
    const session = lesionApp.session;
    const rings = session.clicks.map(({ i, j, positive }) => {
      const [x, y] = session.canvasAt(i, j);
      const ring = document.createElementNS(SVG, "circle");
      ring.setAttribute("cx", x.toFixed(1));
      ring.setAttribute("cy", y.toFixed(1));
      ring.setAttribute("r", RING_RADIUS_PX);
      ring.setAttribute("fill", "none");
      ring.setAttribute("stroke", COLOURS[positive]);
      ring.setAttribute("stroke-width", "2.5");
      ring.dataset.cy = positive ? "lesion-click-positive" : "lesion-click-negative";
      return ring;
    });
    layer.replaceChildren(...rings);
  }

  lesionApp.markers = {
    /** Puts the layer over the viewport's `viewportElement` (cornerstone's element of the viewport). */
    mount(viewportElement) {
      lesionApp.markers.unmount();
      element = viewportElement;
      layer = document.createElementNS(SVG, "svg");
      layer.dataset.cy = "lesion-clicks";
      layer.style.cssText = "position:absolute;left:0;top:0;width:100%;height:100%;pointer-events:none;z-index:10";
      element.appendChild(layer);
      rendered = () => draw();
      element.addEventListener(window.cornerstone.Enums.Events.IMAGE_RENDERED, rendered);
      draw();
    },
    unmount() {
      if (element && rendered) element.removeEventListener(window.cornerstone.Enums.Events.IMAGE_RENDERED, rendered);
      layer?.remove();
      layer = null;
      element = null;
      rendered = null;
    },
    draw,
  };
})();
