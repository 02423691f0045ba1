/* Behaviour of the OGC API HTML pages (ogcapi/templates), kept out of the pages so the
   Content-Security-Policy can forbid inline script. Data reaches this file through
   data- attributes and <script type="application/json"> blocks (never executed), and
   everything harvested is put into the page with textContent, never as HTML. */
(function () {
  'use strict';

  function jsonBlock(id) {
    var el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }

  function baseMap(el) {
    var map = L.map(el);
    if (el.dataset.tiles) {
      // The operator's tile URL and attribution (server config), not harvested data.
      map.addLayer(new L.TileLayer(el.dataset.tiles, {
        maxZoom: 18, attribution: el.dataset.attribution || ''}));
    }
    return map;
  }

  function itemLink(itemsPath, feature, label) {
    var a = document.createElement('a');
    a.href = itemsPath + '/' + encodeURIComponent(String(feature.id)) + '?f=html';
    a.textContent = label === undefined || label === null ? String(feature.id) : String(label);
    var span = document.createElement('span');
    span.appendChild(a);
    return span;
  }

  // The items page: a "limit" select and a map of this page's features.
  var limits = document.getElementById('limits');
  if (limits) {
    var params = new URL(document.location).searchParams;
    limits.value = params.get('limit') || limits.getElementsByTagName('option')[0].value;
    limits.addEventListener('change', function (ev) {
      document.location.search = 'limit=' + encodeURIComponent(ev.target.value);
    });
  }

  var itemsMap = document.getElementById('items-map');
  if (itemsMap && window.L) {
    var map = baseMap(itemsMap);
    var features = jsonBlock('items-data');
    if (itemsMap.dataset.single === 'true') {
      var one = new L.GeoJSON(features);
      map.addLayer(one);
      map.fitBounds(one.getBounds(), {maxZoom: 15});
    } else if (features) {
      var titleField = itemsMap.dataset.titleField;
      var items = new L.GeoJSON(features, {
        onEachFeature: function (feature, layer) {
          var label = titleField ? (feature.properties || {})[titleField] : feature.id;
          layer.bindPopup(itemLink(itemsMap.dataset.itemsPath, feature, label));
        }
      });
      var markers = L.markerClusterGroup ? L.markerClusterGroup({
        disableClusteringAtZoom: 9, chunkedLoading: true, chunkInterval: 500}) : L.layerGroup();
      markers.clearLayers().addLayer(items);
      map.addLayer(markers);
      map.fitBounds(items.getBounds());
    }
    itemsMap.setAttribute('data-rendered', 'true');
  }

  // The collection page: its extent on a map.
  var collectionMap = document.getElementById('collection-map');
  if (collectionMap && window.L) {
    var cmap = baseMap(collectionMap);
    var b = (collectionMap.dataset.bbox || '').split(',').map(Number);
    if (b.length === 4 && b.every(isFinite)) {
      var box = L.polygon([[b[1], b[0]], [b[3], b[0]], [b[3], b[2]], [b[1], b[2]]]);
      cmap.addLayer(box);
      cmap.fitBounds(box.getBounds(), {maxZoom: 10});
    } else {
      cmap.setView([0, 0], 1);
    }
    collectionMap.setAttribute('data-rendered', 'true');
  }

  // Every page: embed the JSON-LD representation for search engines (a data block).
  if (document.body && document.body.dataset.jsonld !== 'off') {
    var path = window.location.pathname + '?f=jsonld';
    fetch(path, {headers: {'Accept': 'application/ld+json'}})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (!text) { return; }
        var block = document.createElement('script');
        block.type = 'application/ld+json';
        // pygeoapi's note: search engines do not expect the full context path.
        block.textContent = text.replace('docs/jsonldcontext.jsonld', '');
        document.head.appendChild(block);
      })
      .catch(function () {});
  }
}());
