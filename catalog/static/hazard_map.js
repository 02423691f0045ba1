/* Vector-tile maps of renkei collections with MapLibre GL JS (vendored, CSP build): hazard
   layers styled by their meaning (flood depth ranks in the national legend colours, sediment
   zones yellow/red, tsunami depths), shelters as green dots, other layers in one neutral style.
   The base map is GSI's pale tiles (地理院タイル, credited on screen) unless the server says
   'none' (offline). Used by the /hazards page and by the dataset page for large layers. */
(function () {
  var GSI = 'https://cyberjapandata.gsi.go.jp/xyz/pale/{z}/{x}/{y}.png';
  var GSI_CREDIT = '<a href="https://maps.gsi.go.jp/development/ichiran.html" target="_blank" rel="noopener">地理院タイル</a>';
  var FLOOD = ['match', ['get', 'depth_rank'], 1, '#F7F5A9', 2, '#FFD8C0', 3, '#FFB7B7',
               4, '#FF9191', 5, '#F285C9', 6, '#DC7ADC', '#BBBBBB'];
  var LANDSLIDE = ['case', ['in', '特別警戒', ['coalesce', ['get', 'zone_type'], '']],
                   '#E8383D', '#FFE14D'];
  var TSUNAMI = ['step', ['coalesce', ['get', 'depth_min_m'], 0], '#F7F5A9', 0.3, '#FFD8C0',
                 1, '#FFB7B7', 2, '#FF9191', 5, '#F285C9'];
  var FILL = {flood_area: FLOOD, landslide_area: LANDSLIDE, tsunami_area: TSUNAMI};

  function layersFor(theme, id) {
    var src = {source: id, 'source-layer': id};
    function with_(o) { for (var k in src) { o[k] = src[k]; } return o; }
    if (FILL[theme]) {
      return [with_({id: id + '-fill', type: 'fill',
                     paint: {'fill-color': FILL[theme], 'fill-opacity': 0.75}}),
              with_({id: id + '-line', type: 'line', minzoom: 12,
                     paint: {'line-color': '#6b6b6b', 'line-width': 0.5}})];
    }
    if (theme === 'shelter') {
      return [with_({id: id + '-point', type: 'circle', filter: ['==', ['geometry-type'], 'Point'],
                     paint: {'circle-color': '#1f6f3f', 'circle-radius': 5,
                             'circle-stroke-color': '#ffffff', 'circle-stroke-width': 1.5}})];
    }
    return [with_({id: id + '-fill', type: 'fill', filter: ['==', ['geometry-type'], 'Polygon'],
                   paint: {'fill-color': '#0b4f9c', 'fill-opacity': 0.25}}),
            with_({id: id + '-line', type: 'line', filter: ['!=', ['geometry-type'], 'Point'],
                   paint: {'line-color': '#0b4f9c', 'line-width': 1.5}}),
            with_({id: id + '-point', type: 'circle', filter: ['==', ['geometry-type'], 'Point'],
                   paint: {'circle-color': '#d9480f', 'circle-radius': 5,
                           'circle-stroke-color': '#8a1c00', 'circle-stroke-width': 1.5}})];
  }

  /* el: the map container; layers: [{id, theme, bounds}, ...]; returns the maplibregl.Map. */
  window.renkeiTileMap = function (el, layers, view) {
    if (!window.maplibregl) { return null; }
    if (el.dataset.worker) { maplibregl.setWorkerUrl(el.dataset.worker); }
    var tiles = el.dataset.tiles;
    var style = {version: 8, sources: {}, layers: [
      {id: 'background', type: 'background', paint: {'background-color': '#eef2f5'}}]};
    if (el.dataset.basemap === 'gsi') {
      style.sources.gsi = {type: 'raster', tiles: [GSI], tileSize: 256, maxzoom: 18,
                           attribution: GSI_CREDIT};
      style.layers.push({id: 'gsi-pale', type: 'raster', source: 'gsi'});
    }
    layers.forEach(function (layer) {
      var theme = layer.theme, id = layer.id;
      style.sources[id] = {type: 'vector', minzoom: 0, maxzoom: 18,
                           // Absolute, and built by hand: new URL() would escape {z}.
                           tiles: [window.location.origin
                                   + tiles.replace('__CID__', encodeURIComponent(id))]};
      // Within its extent only: tiles outside a tileset's limits are 404 (OGC API - Tiles).
      if (layer.bounds && layer.bounds.length === 4) { style.sources[id].bounds = layer.bounds; }
      layersFor(theme, id).forEach(function (l) { style.layers.push(l); });
    });
    var opts = {container: el, style: style, attributionControl: {compact: false},
                center: [134.84, 34.9], zoom: 8, cooperativeGestures: false};
    if (view && view.center) { opts.center = view.center; opts.zoom = view.zoom || 15; }
    var map = new maplibregl.Map(opts);
    map.addControl(new maplibregl.NavigationControl({showCompass: false}), 'top-right');
    if (view && view.bounds && !view.center) {
      map.fitBounds(view.bounds, {padding: 16, duration: 0});
    }
    el.setAttribute('data-ready', 'loading');
    map.on('load', function () { el.setAttribute('data-ready', 'yes'); });
    // How many features of our layers are drawn (read by the browser tests).
    var ours = style.layers.filter(function (l) { return l.source && l.source !== 'gsi'; })
                           .map(function (l) { return l.id; });
    map.on('idle', function () {
      el.setAttribute('data-rendered', String(map.queryRenderedFeatures({layers: ours}).length));
    });
    return map;
  };
}());
