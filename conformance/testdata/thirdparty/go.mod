module example.com/thirdparty

go 1.26.0

require github.com/perimeter-sdk/perimeter v0.1.0
