/* Map preview on the dataset page: features from our own OGC API, drawn with Leaflet.
   No base map unless the server configures one (offline default); 地理院タイル need their
   attribution. Points are circle markers (SVG), so they print and scale without images. */
(function () {
  var el = document.getElementById('map');
  if (!el || !window.L) { return; }
  var status = document.getElementById('map-status');
  var map = L.map(el, {scrollWheelZoom: false, attributionControl: true});
  if (el.dataset.basemap === 'gsi') {
    L.tileLayer('https://cyberjapandata.gsi.go.jp/xyz/pale/{z}/{x}/{y}.png', {
      maxZoom: 18,
      attribution: '<a href="https://maps.gsi.go.jp/development/ichiran.html">地理院タイル</a>'
    }).addTo(map);
  }
  var bbox = (el.dataset.bbox || '').split(',').map(Number);
  if (bbox.length === 4 && bbox.every(isFinite)) {
    map.fitBounds([[bbox[1], bbox[0]], [bbox[3], bbox[2]]], {padding: [12, 12]});
  } else {
    map.setView([34.9, 134.8], 8);  // Hyogo prefecture
  }
  if (status) { status.textContent = el.dataset.loading; }
  fetch(el.dataset.items, {headers: {'Accept': 'application/geo+json'}})
    .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
    .then(function (fc) {
      var layer = L.geoJSON(fc, {
        pointToLayer: function (f, latlng) {
          return L.circleMarker(latlng, {radius: 6, color: '#8a1c00', weight: 2,
                                         fillColor: '#d9480f', fillOpacity: 0.8});
        },
        style: function () { return {color: '#0b4f9c', weight: 2, fillOpacity: 0.25}; },
        onEachFeature: function (f, l) {
          var p = f.properties || {}, keys = Object.keys(p).slice(0, 6);
          var div = document.createElement('div');
          keys.forEach(function (k) {
            var line = document.createElement('div');
            line.textContent = k + '：' + (p[k] === null ? '' : p[k]);
            div.appendChild(line);
          });
          l.bindPopup(div);
        }
      }).addTo(map);
      var n = (fc.features || []).length;
      if (n && layer.getBounds().isValid()) { map.fitBounds(layer.getBounds(), {padding: [12, 12]}); }
      el.setAttribute('data-features', String(n));
      if (status) { status.textContent = el.dataset.shown.replace('{n}', n); }
    })
    .catch(function () { if (status) { status.textContent = el.dataset.failed; } });
}());
