module github.com/perimeter-sdk/perimeter

go 1.26
