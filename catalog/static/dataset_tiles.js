/* Dataset page map for hazard and large layers: the collection's vector tiles (hazard_map.js),
   fitted to its extent. */
(function () {
  var el = document.getElementById('map');
  if (!el || !window.renkeiTileMap) { return; }
  var layers = JSON.parse(el.dataset.layers || '[]');
  var bbox = (el.dataset.bbox || '').split(',').map(Number);
  var view = bbox.length === 4 && bbox.every(isFinite)
    ? {bounds: [[bbox[0], bbox[1]], [bbox[2], bbox[3]]]} : {center: [134.84, 34.9], zoom: 8};
  window.renkeiTileMap(el, layers, view);
}());
