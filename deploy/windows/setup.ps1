# lipsync for Windows: checks this machine, makes the demo model, and runs lipsync's info, the
# one-frame test and the benchmark on it. Run from the unpacked folder:
#   powershell -ExecutionPolicy Bypass -File .\setup.ps1
# Outputs go to .\out; the demo model to .\models.
$ErrorActionPreference = 'Stop'
$Here = Split-Path -Parent $MyInvocation.MyCommand.Path
$Exe = Join-Path $Here 'lipsync.exe'
$Models = Join-Path $Here 'models'
$Out = Join-Path $Here 'out'
New-Item -ItemType Directory -Force -Path $Models, $Out | Out-Null

function Step($Text) { Write-Host "`n== $Text" -ForegroundColor Cyan }

function Run-Lipsync {
    & $Exe @args
    if ($LASTEXITCODE -ne 0) { throw "lipsync $($args -join ' ') failed (exit code $LASTEXITCODE)" }
}

Step 'Windows and GPU'
$Version = [Environment]::OSVersion.Version
Write-Host "Windows $Version"
if ($Version.Major -lt 10 -or ($Version.Major -eq 10 -and $Version.Build -lt 18362)) {
    Write-Warning 'DirectML needs Windows 10 version 1903 (build 18362) or later; lipsync will use the CPU.'
}
Get-CimInstance Win32_VideoController | ForEach-Object { Write-Host "GPU: $($_.Name) (driver $($_.DriverVersion))" }

Step 'Demo model'
$Model = Join-Path $Models 'demo.onnx'
if (-not (Test-Path $Model)) {
    $Python = $null
    foreach ($Candidate in @('py', 'python')) {
        if (Get-Command $Candidate -ErrorAction SilentlyContinue) { $Python = $Candidate; break }
    }
    $HasTorch = $false
    if ($Python) {
        # Windows PowerShell turns a native program's redirected stderr into an error: catch it.
        try {
            & $Python -c 'import torch, onnx, numpy' 2>$null
            $HasTorch = ($LASTEXITCODE -eq 0)
        } catch { $HasTorch = $false }
    }
    if (-not $HasTorch) {
        Write-Host 'The demo model is made with Python and PyTorch, which were not found. Install them:'
        Write-Host '  1. Python 3.10 or later from https://www.python.org (tick "Add python.exe to PATH")'
        Write-Host '  2. python -m pip install torch onnx numpy'
        Write-Host 'then run this script again. (Or copy an exported model to models\demo.onnx.)'
        exit 1
    }
    $env:PYTHONPATH = Join-Path $Here 'python'
    $env:LIPSYNC_BIN = $Exe
    & $Python -m lipsync.demo --out-dir $Models
    if ($LASTEXITCODE -ne 0) { throw 'making the demo model failed' }
}
Write-Host "model: $Model"

Step 'lipsync info'
Run-Lipsync info --model $Model
$Info = (& $Exe info --model $Model --json | Out-String) | ConvertFrom-Json
$Provider = 'cpu'
$Dml = $Info.ort_providers | Where-Object { $_.name -eq 'dml' }
if ($Dml -and $Dml.usable) {
    $Provider = 'dml'
    Write-Host 'DirectML: a DirectX 12 device is available; the GPU runs the model.'
} elseif ($Dml) {
    Write-Host "DirectML unavailable ($($Dml.missing)); running on the CPU."
}

Step "One-frame test (provider $Provider)"
$Face = Join-Path $Out 'demo_face_out.png'
Run-Lipsync infer --model $Model --provider $Provider --face (Join-Path $Models 'demo_face.png') `
    --audio (Join-Path $Models 'demo_audio.npy') --out $Face

Step "Benchmark (provider $Provider)"
$Bench = Join-Path $Out 'bench.json'
Run-Lipsync bench --model $Model --provider $Provider --batch 1,4 --duration 5 --warmup 3 --json $Bench

Step 'Done'
Write-Host "output image:      $Face"
Write-Host "benchmark figures: $Bench"
Write-Host "demo model:        $Model"
