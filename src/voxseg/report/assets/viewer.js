// voxseg report: the slice viewer of one case (plain JavaScript, no network).
//
// window.VOXSEG_CASE holds the case: shape [z, y, x] in LPS orientation, spacing (mm), the
// image (int16 HU for CT, else uint16 with scale/offset; little-endian byte planes) and the
// label maps "reference" and "prediction" (uint8), each gzip-compressed and base64-encoded.
(function () {
  "use strict";
  var D = window.VOXSEG_CASE;
  var root = document.getElementById("viewer");
  if (!D || !root) return;

  var CT_PRESETS = [
    ["abdomen (W400 L40)", 400, 40],
    ["liver (W150 L90)", 150, 90],
    ["lung (W1500 L-600)", 1500, -600],
    ["bone (W1800 L400)", 1800, 400],
    ["brain (W80 L40)", 80, 40],
    ["full range", 4095, 1023.5]
  ];
  var FP = [255, 215, 0], FN = [0, 190, 255];
  var AXES = [["axial", 0], ["coronal", 1], ["sagittal", 2]];

  function unpack(b64) {
    var bin = atob(b64), u8 = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) u8[i] = bin.charCodeAt(i);
    var stream = new Blob([u8]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Response(stream).arrayBuffer();
  }

  function hexRgb(hex) {
    var n = parseInt(hex.slice(1), 16);
    return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
  }

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function select(id, label, options, value) {
    var wrap = el("label", {}, label + " ");
    var s = el("select", { id: id });
    options.forEach(function (o) {
      var opt = el("option", { value: String(o[1]) }, o[0]);
      if (String(o[1]) === String(value)) opt.selected = true;
      s.appendChild(opt);
    });
    wrap.appendChild(s);
    return [wrap, s];
  }

  var nz = D.shape[0], ny = D.shape[1], nx = D.shape[2];
  var colors = {};
  D.labels.forEach(function (l) { colors[l.value] = hexRgb(l.color); });

  Promise.all([
    D.image ? unpack(D.image.data) : Promise.resolve(null),
    D.layers.reference ? unpack(D.layers.reference) : Promise.resolve(null),
    D.layers.prediction ? unpack(D.layers.prediction) : Promise.resolve(null)
  ]).then(function (buffers) {
    var img = null;
    if (buffers[0]) {
      // 16-bit values travel as two byte planes (all low bytes, then all high bytes)
      var planes = new Uint8Array(buffers[0]), n = planes.length / 2;
      var bytes = new Uint8Array(planes.length);
      for (var i = 0; i < n; i++) { bytes[2 * i] = planes[i]; bytes[2 * i + 1] = planes[n + i]; }
      img = D.image.dtype === "int16" ? new Int16Array(bytes.buffer) : new Uint16Array(bytes.buffer);
    }
    var ref = buffers[1] ? new Uint8Array(buffers[1]) : null;
    var pred = buffers[2] ? new Uint8Array(buffers[2]) : null;
    build(img, ref, pred);
  }).catch(function (err) {
    root.textContent = "This browser could not unpack the case data: " + err;
    root.setAttribute("data-error", String(err));
  });

  function build(img, ref, pred) {
    var scale = D.image ? D.image.scale : 1, offset = D.image ? D.image.offset : 0;
    var presets;
    if (D.ct) {
      presets = CT_PRESETS;
    } else {
      var lo = offset, hi = offset + 65535 * scale;
      presets = [["full range", hi - lo, (hi + lo) / 2], ["contrast ×2", (hi - lo) / 2, lo + (hi - lo) * 0.4]];
    }
    var state = {
      axis: 0,
      slice: [0, 0, 0],
      ref: ref ? "outline" : "off",
      pred: pred ? "fill" : "off",
      errors: false,
      window: 0,
      opacity: 0.45
    };

    var controls = el("div", { class: "controls" });
    var axisSel = select("axis", "view", nz > 1 ? AXES : [["2D", 0]], 0);
    var slider = el("input", { type: "range", id: "slice-slider", min: "0", max: "0", value: "0", "aria-label": "slice" });
    var sliceLabel = el("span", { class: "status", id: "slice-label" });
    var refSel = select("ref-mode", "reference", [["outline", "outline"], ["fill", "fill"], ["off", "off"]], state.ref);
    var predSel = select("pred-mode", "prediction", [["fill", "fill"], ["outline", "outline"], ["off", "off"]], state.pred);
    var errBox = el("input", { type: "checkbox", id: "error-map" });
    var errLabel = el("label", {}, "");
    errLabel.appendChild(errBox);
    errLabel.appendChild(document.createTextNode(" error map"));
    var winSel = select("window", "window", presets.map(function (p, i) { return [p[0], i]; }), 0);
    var jump = el("button", { id: "jump-error", type: "button" }, "slice of largest error");
    var opacity = el("input", { type: "range", id: "opacity", min: "0.1", max: "1", step: "0.05", value: String(state.opacity), "aria-label": "fill opacity" });
    var opLabel = el("label", {}, "fill opacity ");
    opLabel.appendChild(opacity);
    [axisSel[0], slider, sliceLabel].forEach(function (c) { controls.appendChild(c); });
    var controls2 = el("div", { class: "controls" });
    [refSel[0], predSel[0], errLabel, opLabel, winSel[0], jump].forEach(function (c) { controls2.appendChild(c); });
    if (!ref) refSel[1].disabled = true;
    if (!pred) predSel[1].disabled = true;
    if (!(ref && pred)) { errBox.disabled = true; jump.disabled = true; }
    if (!img) winSel[1].disabled = true;

    var canvas = el("canvas", { id: "slice", tabindex: "0", "aria-label": "slice image; mouse wheel or arrow keys change the slice" });
    var legend = el("div", { class: "legend", id: "legend" });
    var help = el("p", { class: "status" }, nz > 1
      ? "Mouse wheel, the slider or the arrow keys (Page Up/Down: 10) change the slice. " +
        "Axial slices show the patient's right on the left and anterior at the top."
      : "A 2D image, shown as stored.");
    root.appendChild(controls);
    root.appendChild(canvas);
    root.appendChild(controls2);
    root.appendChild(legend);
    root.appendChild(help);
    var ctx = canvas.getContext("2d");

    function dims(axis) {
      // rows, columns, their spacings, the slice count; coronal/sagittal show superior up.
      if (axis === 0) return { rows: ny, cols: nx, sr: D.spacing[1], sc: D.spacing[2], n: nz };
      if (axis === 1) return { rows: nz, cols: nx, sr: D.spacing[0], sc: D.spacing[2], n: ny };
      return { rows: nz, cols: ny, sr: D.spacing[0], sc: D.spacing[1], n: nx };
    }

    function index(axis, k, r, c) {
      if (axis === 0) return (k * ny + r) * nx + c;
      if (axis === 1) return ((nz - 1 - r) * ny + k) * nx + c;
      return ((nz - 1 - r) * ny + c) * nx + k;
    }

    function countPerSlice(axis, test) {
      var d = dims(axis), counts = new Float64Array(d.n);
      for (var z = 0; z < nz; z++) for (var y = 0; y < ny; y++) for (var x = 0; x < nx; x++) {
        var i = (z * ny + y) * nx + x;
        if (test(i)) counts[axis === 0 ? z : axis === 1 ? y : x] += 1;
      }
      return counts;
    }

    function argmax(a) {
      var best = -1, k = Math.floor(a.length / 2);
      for (var i = 0; i < a.length; i++) if (a[i] > best) { best = a[i]; k = i; }
      return best > 0 ? k : Math.floor(a.length / 2);
    }

    var anyLabel = function (i) { return (ref && ref[i] > 0) || (pred && pred[i] > 0); };
    var isError = function (i) { return ref[i] !== pred[i]; };
    for (var a = 0; a < 3; a++) state.slice[a] = argmax(countPerSlice(a, anyLabel));

    function layerAt(map, axis, k, r, c, d) {
      return map[index(axis, k, r, c)];
    }

    function edge(map, axis, k, r, c, d, v) {
      if (r === 0 || c === 0 || r === d.rows - 1 || c === d.cols - 1) return true;
      return layerAt(map, axis, k, r - 1, c) !== v || layerAt(map, axis, k, r + 1, c) !== v ||
        layerAt(map, axis, k, r, c - 1) !== v || layerAt(map, axis, k, r, c + 1) !== v;
    }

    function blend(px, o, rgb, alpha) {
      px[o] = px[o] * (1 - alpha) + rgb[0] * alpha;
      px[o + 1] = px[o + 1] * (1 - alpha) + rgb[1] * alpha;
      px[o + 2] = px[o + 2] * (1 - alpha) + rgb[2] * alpha;
    }

    function render() {
      var axis = state.axis, d = dims(axis), k = state.slice[axis];
      if (canvas.width !== d.cols || canvas.height !== d.rows) {
        canvas.width = d.cols;
        canvas.height = d.rows;
      }
      var wmm = d.cols * d.sc, hmm = d.rows * d.sr, fit = 520 / Math.max(wmm, hmm);
      canvas.style.width = Math.round(wmm * fit) + "px";
      canvas.style.height = Math.round(hmm * fit) + "px";
      var p = presets[state.window], wlo = p[2] - p[1] / 2, wdiv = p[1] || 1;
      var data = ctx.createImageData(d.cols, d.rows), px = data.data;
      for (var r = 0; r < d.rows; r++) for (var c = 0; c < d.cols; c++) {
        var i = index(axis, k, r, c), o = (r * d.cols + c) * 4;
        var g = 0;
        if (img) {
          var v = img[i] * scale + offset;
          g = Math.max(0, Math.min(255, ((v - wlo) / wdiv) * 255));
        }
        px[o] = px[o + 1] = px[o + 2] = g;
        px[o + 3] = 255;
        if (state.errors && ref && pred) {
          if (ref[i] !== pred[i]) blend(px, o, pred[i] > 0 ? FP : FN, 0.85);
          continue;
        }
        var layers = [[ref, state.ref, false], [pred, state.pred, true]];
        for (var j = 0; j < 2; j++) {
          var map = layers[j][0], mode = layers[j][1];
          if (!map || mode === "off") continue;
          var lv = map[i];
          if (lv === 0 || !colors[lv]) continue;
          if (mode === "fill") blend(px, o, colors[lv], state.opacity);
          else if (edge(map, axis, k, r, c, d, lv)) {
            // The prediction's outline is dotted, so both outlines can be told apart.
            if (!layers[j][2] || (r + c) % 2 === 0) blend(px, o, colors[lv], 1);
          }
        }
      }
      ctx.putImageData(data, 0, 0);
      slider.max = String(d.n - 1);
      slider.value = String(k);
      // and where the slice lies in the whole (LPS-oriented) volume
      var whole = D.box[axis][0] + k * D.strides[axis];
      sliceLabel.textContent = "slice " + (k + 1) + " / " + d.n + " (index " + whole + " of " +
        D.original_shape[axis] + " in the whole volume)";
      root.setAttribute("data-axis", String(axis));
      root.setAttribute("data-slice", String(k));
      root.setAttribute("data-ready", "1");
      drawLegend();
    }

    function drawLegend() {
      legend.innerHTML = "";
      if (state.errors) {
        [["false positive (predicted, not in the reference)", FP], ["false negative (reference, not predicted)", FN]].forEach(function (e) {
          var it = el("span", { class: "item" });
          var sw = el("span", { class: "swatch" });
          sw.style.background = "rgb(" + e[1].join(",") + ")";
          it.appendChild(sw);
          it.appendChild(document.createTextNode(e[0]));
          legend.appendChild(it);
        });
        return;
      }
      D.labels.forEach(function (l) {
        var it = el("span", { class: "item" });
        var sw = el("span", { class: "swatch" });
        sw.style.background = l.color;
        it.appendChild(sw);
        it.appendChild(document.createTextNode(l.value + " " + l.name));
        legend.appendChild(it);
      });
      var how = [];
      if (ref && state.ref !== "off") how.push("reference: " + (state.ref === "outline" ? "solid outline" : "fill"));
      if (pred && state.pred !== "off") how.push("prediction: " + (state.pred === "outline" ? "dotted outline" : "fill"));
      legend.appendChild(el("span", { class: "item status" }, how.join(" · ")));
    }

    function setSlice(k) {
      var n = dims(state.axis).n;
      state.slice[state.axis] = Math.max(0, Math.min(n - 1, k));
      render();
    }

    axisSel[1].addEventListener("change", function () { state.axis = Number(axisSel[1].value); render(); });
    slider.addEventListener("input", function () { setSlice(Number(slider.value)); });
    refSel[1].addEventListener("change", function () { state.ref = refSel[1].value; render(); });
    predSel[1].addEventListener("change", function () { state.pred = predSel[1].value; render(); });
    errBox.addEventListener("change", function () { state.errors = errBox.checked; render(); });
    winSel[1].addEventListener("change", function () { state.window = Number(winSel[1].value); render(); });
    opacity.addEventListener("input", function () { state.opacity = Number(opacity.value); render(); });
    jump.addEventListener("click", function () {
      setSlice(argmax(countPerSlice(state.axis, isError)));
    });
    canvas.addEventListener("wheel", function (e) {
      e.preventDefault();
      setSlice(state.slice[state.axis] + (e.deltaY > 0 ? 1 : -1));
    }, { passive: false });
    document.addEventListener("keydown", function (e) {
      if (e.target && (e.target.tagName === "INPUT" && e.target.type !== "range" || e.target.tagName === "SELECT")) return;
      var step = { ArrowUp: 1, ArrowRight: 1, ArrowDown: -1, ArrowLeft: -1, PageUp: 10, PageDown: -10 }[e.key];
      if (step === undefined) return;
      e.preventDefault();
      setSlice(state.slice[state.axis] + step);
    });
    render();
  }
})();
